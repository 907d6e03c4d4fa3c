"""Currency conversion: the rate source protocol and its providers, and the conversion arithmetic.

A rate source answers quotes (`RateSource.quote`); `sources.rate_source` builds the one the settings name. The
arithmetic (`conversion.py`) turns a locked quote into the wallet amount and the house's margin, in integer minor
units, never floats.
"""

from fx.conversion import Conversion, convert_credit, convert_debit, parse_rate
from fx.quotes import FxQuote, FxUnavailable, RateSource

__all__ = ["Conversion", "FxQuote", "FxUnavailable", "RateSource", "convert_credit", "convert_debit", "parse_rate"]
