"""Venue adapters, one module per venue, all shaped alike (see ``irisflow._venue.Venue``)."""

from __future__ import annotations

from . import binance as binance
