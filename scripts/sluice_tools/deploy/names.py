"""Every AWS name of one provider in one stage, from one place.

Scopes, as AWS defines them (and so what a name must carry to never collide):
- stream, table, queue, alarms, stacks, Lambda functions: per account and region -> the
  provider and the stage are enough (``sluice-quotes-prod``, ``sluice-quotes-prod-ledger``);
- S3 buckets: global across *all* accounts and regions -> the account id and the region too;
- CloudWatch dashboards: per account, across regions -> the region too;
- IAM roles and schedule rules: left for CloudFormation to name (stack-unique).

The bucket has two spellings that always agree: ``bucket_sub`` for the template (an
``Fn::Sub`` pattern, so one template deploys into any account) and ``bucket(account, region)``
for the tools that talk to AWS directly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

BUCKET_MAX = 63
ACCOUNT_LEN = 12
REGION_MAX = 15  # the longest region name today is 14 characters (ap-southeast-5)
_BUCKET_PREFIX_MAX = BUCKET_MAX - (1 + ACCOUNT_LEN + 1 + REGION_MAX)
HANDLER_FUNCTION_MAX = 64


@dataclass(frozen=True)
class StageNames:
    provider: str
    stage: str
    app_name: str

    @classmethod
    def of(cls, provider: str, stage: str, app_name: str | None = None) -> StageNames:
        return cls(provider, stage, app_name or f"sluice-{provider}")

    @property
    def base(self) -> str:
        return f"sluice-{self.provider}-{self.stage}"

    @property
    def stack(self) -> str:
        return self.base

    @property
    def resources_stack(self) -> str:
        """The data resources alone (the plain `chalice deploy` path)."""
        return f"{self.base}-resources"

    @property
    def stream(self) -> str:
        return self.base

    @property
    def table(self) -> str:
        return f"{self.base}-ledger"

    @property
    def queue(self) -> str:
        return f"{self.base}-parked"

    def function(self, handler: str) -> str:
        """What `chalice deploy` and the deploy's merge template call a handler's function."""
        return f"{self.app_name}-{self.stage}-{handler}"

    @property
    def bucket_prefix(self) -> str:
        """Short enough for the account and the longest region to follow within 63 chars;
        a long one is cut and given a hash of the whole, so two providers never share it."""
        if len(self.base) <= _BUCKET_PREFIX_MAX:
            return self.base
        digest = hashlib.sha256(self.base.encode()).hexdigest()[:6]
        return f"{self.base[:_BUCKET_PREFIX_MAX - 7].rstrip('-')}-{digest}"

    def bucket(self, account: str, region: str) -> str:
        return f"{self.bucket_prefix}-{account}-{region}"

    @property
    def bucket_sub(self) -> str:
        """The bucket name as an ``Fn::Sub`` pattern."""
        return f"{self.bucket_prefix}-${{AWS::AccountId}}-${{AWS::Region}}"

    def alarm(self, kind: str) -> str:
        return f"{self.base}-{kind}"

    @property
    def dashboard_sub(self) -> str:
        return f"{self.base}-${{AWS::Region}}"

    def dashboard(self, region: str) -> str:
        return f"{self.base}-{region}"

    def too_long_functions(self, handlers: list[str]) -> list[str]:
        return [self.function(h) for h in handlers
                if len(self.function(h)) > HANDLER_FUNCTION_MAX]
