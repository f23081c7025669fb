"""Helpers behind the home page and the policy editor, kept out of the page scripts so they can be tested."""
