// Starts Swagger UI for the gateway's data API.  A static file (not an inline
// script) so the page runs under the gateway's script-src 'self' policy.
(function () {
  "use strict";
  var el = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: el.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // The public validator is another host: the CSP blocks it, and the spec
    // is ours anyway.
    validatorUrl: null,
    // "Try it out" runs with the signed-in session cookie; unsafe methods
    // need this header (the gateway's CSRF rule for cookie sessions).
    requestInterceptor: function (request) {
      request.headers["X-Requested-With"] = "XMLHttpRequest";
      return request;
    },
  });
})();
