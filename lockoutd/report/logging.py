"""structlog set-up: JSON lines to stdout by default, a readable console format on request."""

from __future__ import annotations

import logging
import sys

import stamina
import structlog

from lockoutd.report.library_logs import LibraryLogFilter

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route structlog and the standard library's loggers (aiokafka, httpx) to stdout."""
    renderer: structlog.types.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            # Local variables stay out of tracebacks: they can hold tokens and request bodies.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    handler.addFilter(LibraryLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter (every HTTP request, every fetch) stays out unless debugging.
    root.setLevel(max(_LEVELS[level], logging.WARNING) if level != "debug" else logging.DEBUG)
    # lockoutd logs its retries itself, once per action with its rule and user (stamina's own
    # line names neither); stamina's default Prometheus hook would register on the global
    # registry, outside lockoutd's own.
    stamina.instrumentation.set_on_retry_hooks([])
