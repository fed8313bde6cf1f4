"""Pages people look at: the dashboard and the reports, rendered from the same data as the API."""

import datetime as dt

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

templates = Environment(loader=PackageLoader("neocloud.web"), autoescape=select_autoescape(), undefined=StrictUndefined)
templates.filters["when"] = lambda t: "" if t is None else dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
templates.filters["num"] = lambda v, d=0: f"{v:,.{d}f}"
