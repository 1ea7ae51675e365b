"""`llm-srt serve`: the OpenAI-compatible HTTP server (`llm_srt.serving`); its flags are `ServeSettings`' fields."""

from __future__ import annotations

import argparse
import logging
import os

from ..serving.settings import add_arguments, from_arguments
from .common import WorkError, add_vad_arguments, vad_parameters
from .safe_io import UsageError, number_type


logger = logging.getLogger(__name__)


def add_parser(commands) -> argparse.ArgumentParser:
    """Add the `serve` subcommand to the `llm-srt` command's subparsers."""
    parser = commands.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/audio/transcriptions, "
                                 "/v1/audio/translations) with request batching")
    parser.add_argument("model", help="model folder or Hub id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=number_type(int, 0, 65535, what="a port number"), default=8000)
    add_arguments(parser)
    add_vad_arguments(parser, switch=False)  # --vad-filter/--no-vad-filter is a ServeSettings field
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `llm-srt serve` until interrupted. Errors are raised with one-line messages for the CLI to print."""
    try:
        import uvicorn
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401 - form uploads
    except ImportError as error:
        raise WorkError(f"llm-srt serve needs FastAPI, uvicorn and python-multipart ({error}): "
                        "pip install 'llm-srt[serve]'") from None
    try:
        from ..serving.app import create_app

        app = create_app(args.model, **from_arguments(args), vad_parameters=vad_parameters(args))
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the loader raises, name the model and stop
        where = "" if os.path.isdir(args.model) else " (no such local folder; tried it as a Hub id)"
        message = " ".join(str(error).split()) or type(error).__name__
        raise WorkError(f"could not load the model {args.model}{where}: {message}") from None
    engine = app.state.server.engine
    where = f" on {engine.device} (--device {args.device})" if engine.name == "transformers" else ""
    logger.warning(f"Serving {app.state.server.settings.served_model_name!r} with the {engine.name} engine{where} on "
                   f"http://{args.host}:{args.port}/v1 (live page: http://{args.host}:{args.port}/live)")
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


__all__ = ["add_parser", "run"]
