"""`sluice pause` / `sluice resume`: the operator's hand on a provider's gate."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    pause = commands.add_parser("pause", help="stop a provider's ingestion (nothing automatic "
                                "re-enables it)")
    pause.add_argument("provider")
    pause.add_argument("--reason", default="operator", help="shown by `sluice status`")
    pause.add_argument("--stage")
    pause.set_defaults(run=run_pause)
    resume = commands.add_parser("resume", help="lift an operator pause")
    resume.add_argument("provider")
    resume.add_argument("--stage")
    resume.set_defaults(run=run_resume)


def _parts(args: argparse.Namespace):
    from sluice.control import ControlStore
    from sluice.mapping import MappingClient
    from sluice_tools.provider_config import provider_settings

    s = provider_settings(args.provider, args.stage)
    return s, ControlStore(s.table_name), MappingClient(s.ventilator_function)


def run_pause(args: argparse.Namespace) -> int:
    from sluice.operators import pause

    s, control, mapping = _parts(args)
    state, update = pause(control, mapping, s.stream_name, args.reason)
    print(f"{s.provider}: paused ({state.pause_reason}); mapping {update}")
    return 0


def run_resume(args: argparse.Namespace) -> int:
    from sluice.operators import resume

    s, control, mapping = _parts(args)
    state, update = resume(control, mapping, s.stream_name)
    print(f"{s.provider}: resumed; breaker {state.breaker}, batch size {state.batch_size}; "
          f"mapping {update}")
    return 0
