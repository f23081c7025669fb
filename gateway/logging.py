"""structlog for the gateway, with the standard library's loggers routed through it.

JSON lines when stderr is not a terminal (containers, CI), readable console
output when it is.  uvicorn's and Streamlit's loggers go through the same
pipeline, so every line of the process has one shape.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(*, json: bool | None = None, level: str = "INFO") -> None:
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if json else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "streamlit"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    _adopt_streamlit_loggers(handler)


def _adopt_streamlit_loggers(handler: logging.Handler) -> None:
    """Streamlit gives each of its loggers a console handler of its own and
    stops propagation; hand them ours instead so its lines are structured too."""
    from streamlit import logger as st_logger

    def setup_formatter(lg: logging.Logger) -> None:
        lg.handlers[:] = [handler]

    st_logger.setup_formatter = setup_formatter
    for lg in list(st_logger._loggers.values()):
        setup_formatter(lg)
