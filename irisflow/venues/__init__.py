"""Venue adapters, one module per venue, all shaped alike (see ``irisflow._venue.Venue``)."""

from __future__ import annotations

from . import alchemy as alchemy
from . import binance as binance
from . import coinbase as coinbase
from . import kraken as kraken
from . import moralis as moralis
from . import polygon as polygon
