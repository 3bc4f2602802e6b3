"""structlog set-up: JSON lines to stdout by default, a readable console format on request.

``log.level`` is lockoutd's own level. The libraries' loggers (httpx, httpcore, h2, hpack,
aiokafka, aiohttp, asyncio, ...) log warnings and errors only, whatever that level: at debug
level they write request headers, and with HTTP/2 ``hpack`` writes the encoded header block,
which decodes to ``Authorization: Bearer <token>``. What they do log goes through the same
renderer as lockoutd's lines, with a ``logger`` field.
"""

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


_OWN = "lockoutd"
# Set explicitly too, in case anything lowered them before; the filter covers every other one.
_LIBRARIES = ("hpack", "h2", "httpcore", "httpx", "aiokafka", "aiohttp", "asyncio", "urllib3")


def _libraries_warn_only(record: logging.LogRecord) -> bool:
    """Below warning, only lockoutd's own standard-library loggers may write."""
    return (
        record.levelno >= logging.WARNING
        or record.name == _OWN
        or record.name.startswith(_OWN + ".")
    )


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
    # Local variables stay out of tracebacks: they can hold tokens and request bodies.
    exceptions = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    )
    structlog.configure(
        processors=[*shared, exceptions, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exceptions,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    handler.addFilter(_libraries_warn_only)
    # aiokafka's lost-broker errors become warnings, each at most once in a while: lockoutd
    # waits such outages out and says so itself.
    handler.addFilter(LibraryLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The root's level is the libraries' level (they inherit it), so that their debug calls
    # cost nothing; the filter holds even for a library that lowers its own logger's level.
    root.setLevel(logging.WARNING)
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger(_OWN).setLevel(_LEVELS[level])
    # lockoutd logs its retries itself, once per action with its rule and user (stamina's own
    # line names neither); stamina's default Prometheus hook would register on the global
    # registry, outside lockoutd's own.
    stamina.instrumentation.set_on_retry_hooks([])
