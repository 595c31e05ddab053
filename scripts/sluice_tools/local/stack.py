"""Deploy a provider's real Chalice app onto the local stack, as `chalice deploy` would on AWS.

Functions are named ``<app>-<stage>-<handler>`` and registered from the app's decorators; the
stream, table, bucket and queue are created from ``sluice_tools.resources`` (the same
definitions a deploy merges into its template); the mapping comes from ``on_kinesis_record``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3

from sluice.clock import Clock, system_clock
from sluice.metrics import Emit, stdout_emit
from sluice.runtime import Runtime
from sluice.settings import ENV_PREFIX, ProviderSettings, load_settings
from sluice_tools.local.lambda_api import LambdaApiServer
from sluice_tools.local.lambda_service import LambdaService, LocalFunction
from sluice_tools.local.moto import MotoServer, stack_environment
from sluice_tools.local.provider_app import ProviderApp
from sluice_tools.resources import create_locally, provider_resources

LOCAL_STAGE = "local"


class LocalStack:
    """moto (server mode) + the local Lambda service, with this process pointed at both."""

    def __init__(self, *, update_delay_s: float = 0.5, moto_port: int = 0,
                 lambda_port: int = 0) -> None:
        self.moto = MotoServer(moto_port)
        self.lambdas = LambdaService(update_delay_s=update_delay_s)
        self.api = LambdaApiServer(self.lambdas, lambda_port)
        self.env: dict[str, str] = {}
        self._saved_env: dict[str, str | None] = {}

    def start(self) -> LocalStack:
        self.moto.start()
        self.api.start()
        self.env = stack_environment(self.moto.url, self.api.url)
        self._saved_env = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        boto3.setup_default_session()  # forget any session made before the endpoints were set
        return self

    def stop(self) -> None:
        self.api.stop()
        self.moto.stop()
        for key, value in self._saved_env.items():  # leave the process as we found it
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        boto3.setup_default_session()


def settings_from_env(env: Mapping[str, str]) -> ProviderSettings:
    fields = {k[len(ENV_PREFIX):].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    return load_settings(**fields)


@dataclass
class DeployedProvider:
    provider: ProviderApp
    settings: ProviderSettings
    runtime: Runtime
    environment: dict[str, str]
    resources: dict[str, str]
    functions: dict[str, str]  # handler -> function name
    mapping_uuids: list[str] = field(default_factory=list)

    @property
    def stream_arn(self) -> str:
        return self.resources["RequestStream"]


def deploy_provider(
    provider: ProviderApp,
    lambdas: LambdaService,
    *,
    api_base_url: str,
    overrides: Mapping[str, Any] | None = None,
    stage: str = LOCAL_STAGE,
    clock: Clock = system_clock,
    window_clock: Clock | None = None,
    emit: Emit = stdout_emit,
    function_response_types: list[str] | None = None,
    worker_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    session: Any = None,
) -> DeployedProvider:
    session = session or boto3.session.Session()
    functions = {h: provider.function_name(h, stage) for h in provider.handler_names()}
    env = provider.environment(stage)
    env.update({
        f"{ENV_PREFIX}API_BASE_URL": api_base_url,
        f"{ENV_PREFIX}WORKER_FUNCTION": functions["worker"],
        f"{ENV_PREFIX}VENTILATOR_FUNCTION": functions["ventilator"],
        f"{ENV_PREFIX}STAGE": stage,  # metrics carry Stage=local
    })
    for key, value in (overrides or {}).items():
        # Environment variables are strings; lists (maintenance windows) travel as JSON.
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        env[f"{ENV_PREFIX}{key.upper()}"] = text
    settings = settings_from_env(env)
    resources = create_locally(provider_resources(settings), session)

    # No real pause for a delivery with nothing to call: the local poller paces redeliveries.
    runtime = Runtime(settings, clock=clock, emit=emit, window_clock=window_clock,
                      sleep=lambda seconds: None)
    provider.module.runtime.install(runtime)
    for handler, name in functions.items():
        fn = provider.handler(handler)
        timeout = provider.timeout_s(handler, stage)
        if handler == "worker":
            # The settings' worker timeout is the worker's Lambda timeout (scenarios shrink it).
            timeout = settings.worker_timeout_s
            if worker_wrapper is not None:
                fn = worker_wrapper(fn)
        lambdas.add_function(LocalFunction(name, fn, timeout_s=timeout))

    deployed = DeployedProvider(provider, settings, runtime, env, resources, functions)
    for source in provider.kinesis_sources():
        if source.stream != settings.stream_name:
            raise ValueError(
                f"{provider.name}: on_kinesis_record stream {source.stream!r} differs from "
                f"SLUICE_STREAM_NAME {settings.stream_name!r}"
            )
        created = lambdas.create_mapping(
            provider.function_name(source.name, stage),
            deployed.stream_arn,
            batch_size=source.batch_size,
            starting_position=source.starting_position,
            function_response_types=function_response_types,
        )
        deployed.mapping_uuids.append(created["UUID"])
    return deployed
