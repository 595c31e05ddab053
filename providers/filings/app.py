"""Filings: a sluice provider. A table of contents: each handler hands
straight over to the sluice runtime package (vendor/sluice) and this provider's own logic
(chalicelib/)."""

from chalice import Chalice, Rate

from chalicelib.provider import STREAM, fetch_record
from chalicelib.source import todays_ids
from sluice.runtime import LazyRuntime

app = Chalice(app_name="sluice-filings")
runtime = LazyRuntime()


# BatchSize is the provider's concurrency: the ventilator adapts it at run time, never above
# X / (shards x parallelization factor). A `chalice deploy` resets it to this value; the
# ventilator restores the learned size on the next batch.
@app.on_kinesis_record(stream=STREAM, batch_size=4,
                       starting_position="TRIM_HORIZON")
def ventilator(event):
    return runtime().ventilate(event.to_dict(), event.context)


@app.lambda_function(name="worker")
def worker(event, context):
    return runtime().work(event, fetch_record)


@app.schedule(Rate(10, unit=Rate.MINUTES))
def rearm(event):
    return runtime().rearm()


# Scheduled ingestion: the first run inside the provider's window enqueues the day's ids.
@app.schedule(Rate(10, unit=Rate.MINUTES))
def kickoff(event):
    return runtime().kickoff(todays_ids)
