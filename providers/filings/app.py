"""Filings: a sluice provider.

A table of contents: each handler hands straight over to the sluice runtime package
(vendor/sluice) and this provider's own logic (chalicelib/). Handler names and schedules come
from sluice.handlers; this file is rendered from template_provider/ (a test keeps it so)."""

from chalice import Chalice, Rate

from chalicelib.provider import STREAM, fetch_record
from chalicelib.source import todays_ids
from sluice.handlers import (
    KICKOFF,
    KICKOFF_EVERY_MINUTES,
    REARM,
    REARM_EVERY_MINUTES,
    VENTILATOR,
    WORKER,
    ProviderHandlers,
)
from sluice.runtime import LazyRuntime

app = Chalice(app_name="sluice-filings")
runtime = LazyRuntime()  # tests and the local stack install a ready-made Runtime here
handlers = ProviderHandlers(runtime, fetch=fetch_record, todays_ids=todays_ids)


# BatchSize is the provider's concurrency: the ventilator adapts it at run time, never above
# X / (shards x parallelization factor). A `chalice deploy` resets it to this value; the
# ventilator restores the learned size on the next batch.
@app.on_kinesis_record(stream=STREAM, batch_size=4,
                       starting_position="TRIM_HORIZON", name=VENTILATOR)
def ventilator(event):
    return handlers.ventilator(event)


@app.lambda_function(name=WORKER)
def worker(event, context):
    return handlers.worker(event)


@app.schedule(Rate(REARM_EVERY_MINUTES, unit=Rate.MINUTES), name=REARM)
def rearm(event):
    return handlers.rearm()


# Scheduled ingestion: the first run inside the provider's window enqueues the day's ids.
@app.schedule(Rate(KICKOFF_EVERY_MINUTES, unit=Rate.MINUTES), name=KICKOFF)
def kickoff(event):
    return handlers.kickoff()
