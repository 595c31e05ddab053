"""Where this provider's daily list of record ids comes from (scheduled ingestion).

By default the file the firm's portfolio system drops in the provider's bucket
(``inputs/<provider>/<day>.txt``). A provider with its own listing endpoint replaces this with
a function ``todays_ids(day, settings)`` that yields ids."""

from sluice.sources import ids_from_bucket as todays_ids

__all__ = ["todays_ids"]
