"""console.charts: pure SVG rendering, checked as the XML it is."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from console import charts
from console.charts import Chart, Series

SVG = "{http://www.w3.org/2000/svg}"
PLOT_HEIGHT = charts.HEIGHT - charts.MARGIN_TOP - charts.MARGIN_BOTTOM


def parse(chart: Chart) -> ET.Element:
    return ET.fromstring(str(charts.render(chart)))


def bars(chart: Chart) -> list[ET.Element]:
    return list(parse(chart).iter(f"{SVG}rect"))


@pytest.mark.parametrize(("peak", "integer", "ticks"), [
    (0, False, [0, 1]),
    (-3, True, [0, 1]),
    (1, False, [0, 0.25, 0.5, 0.75, 1]),
    (1, True, [0, 1]),
    (7, True, [0, 2, 4, 6, 8]),
    (9, True, [0, 3, 6, 9]),
    (100, True, [0, 25, 50, 75, 100]),
    (101, True, [0, 50, 100, 150]),
    (0.003, False, [0, 0.001, 0.002, 0.003]),
    (1_234_567, True, [0, 500_000, 1_000_000, 1_500_000]),
])
def test_axis_ticks_are_round_numbers_from_zero_past_the_peak(peak: float, integer: bool, ticks: list[float]) -> None:
    assert charts.nice_ticks(peak, integer=integer) == pytest.approx(ticks)


@pytest.mark.parametrize(("count", "positions"), [
    (0, []), (1, [0]), (3, [0, 1, 2]), (6, [0, 1, 2, 3, 4, 5]), (24, [0, 5, 9, 14, 18, 23]),
    (60, [0, 12, 24, 35, 47, 59]),
])
def test_the_x_axis_labels_the_first_the_last_and_evenly_between(count: int, positions: list[int]) -> None:
    assert charts.label_positions(count) == positions


@pytest.mark.parametrize(("value", "plain", "compact"), [
    (0, "0", "0"), (7, "7", "7"), (1234, "1,234", "1.23k"), (2_500_000, "2,500,000", "2.5M"), (12.345, "12.3", "12.3"),
    (3e9, "3,000,000,000", "3G"),
])
def test_numbers_read_plainly_in_tables_and_compactly_on_axes(value: float, plain: str, compact: str) -> None:
    assert (charts.plain(value), charts.compact(value)) == (plain, compact)


def test_bars_are_as_tall_as_their_values_on_the_axis_scale() -> None:
    chart = Chart("c", "Requests", ["a", "b", "c", "d"], [Series("Requests", [1, 2, 0, 4], "requests")])
    drawn = bars(chart)
    assert [float(rect.get("data-value", "")) for rect in drawn] == [1, 2, 4]  # nothing drawn for 0
    heights = [float(rect.get("height", "")) for rect in drawn]
    assert heights == pytest.approx([PLOT_HEIGHT / 4, PLOT_HEIGHT / 2, PLOT_HEIGHT], abs=0.1)  # axis top: 4
    assert [rect.findtext(f"{SVG}title") for rect in drawn] == ["a: Requests 1", "b: Requests 2", "d: Requests 4"]


def test_stacked_bars_sit_on_each_other_in_series_order() -> None:
    chart = Chart("c", "Errors", ["10:00"], [Series("refused", [3], "refused"), Series("timeout", [1], "timeout")])
    refused, timeout = bars(chart)
    assert float(timeout.get("y", "")) + float(timeout.get("height", "")) == pytest.approx(float(refused.get("y", "")),
                                                                                          abs=0.1)
    groups = [g for g in parse(chart).iter(f"{SVG}g") if g.get("data-series")]
    assert [(g.get("data-series"), g.get("class")) for g in groups] == [
        ("refused", "console-tone-refused"), ("timeout", "console-tone-timeout")]


def test_lines_break_where_a_value_is_missing() -> None:
    chart = Chart("c", "Latency", ["a", "b", "c", "d", "e"], [Series("p95", [10, None, 30, 40, None], "p95")],
                  kind="lines", integer=False, additive=False)
    svg = parse(chart)
    paths = list(svg.iter(f"{SVG}path"))
    dots = list(svg.iter(f"{SVG}circle"))
    assert len(dots) == 1  # "a" stands alone
    assert len(paths) == 1 and paths[0].get("d", "").count("L") == 1  # "c" to "d"


@pytest.mark.parametrize("series", [
    [Series("Requests", [0, 0, 0], "requests")],
    [Series("p50", [None, None, None], "p50")],
])
def test_an_empty_chart_says_so_and_draws_nothing(series: list[Series]) -> None:
    chart = Chart("c", "Requests", ["a", "b", "c"], series, kind="bars" if series[0].tone != "p50" else "lines")
    svg = parse(chart).find(f"{SVG}svg")
    assert svg is not None
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "No data in this window" in texts
    assert not list(svg.iter(f"{SVG}rect")) and not list(svg.iter(f"{SVG}path"))
    assert "no data in this window" in svg.findtext(f"{SVG}desc", "")


def test_the_svg_is_an_image_named_by_its_title_and_described() -> None:
    chart = Chart("chart-requests", "Requests per hour", ["09:00", "10:00"],
                  [Series("Requests", [5, 7], "requests")], unit="requests")
    svg = parse(chart).find(f"{SVG}svg")
    assert svg is not None
    assert svg.get("role") == "img"
    assert svg.get("aria-labelledby") == "chart-requests-title chart-requests-desc"
    assert svg.findtext(f"{SVG}title") == "Requests per hour"
    assert svg.findtext(f"{SVG}desc") == (
        "Requests per hour, 2 buckets from 09:00 to 10:00. Requests: 12 requests in total, at most 7 (10:00).")


def test_the_table_holds_every_number_and_a_total_when_they_add_up() -> None:
    chart = Chart("c", "Tokens", ["a", "b"],
                  [Series("in", [1000, 2], "tokens-in"), Series("out", [5, None], "tokens-out")], kind="lines")
    table = parse(chart).find(".//table")
    assert table is not None
    rows = [[cell.text for cell in row] for row in table.iter("tr")]
    assert rows == [["Time (UTC)", "in", "out"], ["a", "1,000", "5"], ["b", "2", "—"], ["Total", "1,002", "5"]]


def test_a_chart_that_does_not_add_up_has_no_total_row() -> None:
    chart = Chart("c", "Latency", ["a"], [Series("p50", [12.5], "p50")], kind="lines", additive=False)
    assert parse(chart).find(".//tfoot") is None


def test_names_and_labels_are_escaped() -> None:
    chart = Chart("c", "<b>x</b>", ["<i>"], [Series("<script>alert(1)</script>", [1], "requests")])
    html = str(charts.render(chart))
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;" in html
    parse(chart)  # still well-formed


def test_formats_given_to_a_chart_are_used_in_the_table_and_the_tooltips() -> None:
    chart = Chart("c", "Cost", ["a"], [Series("Cost", [20_000], "cost")], integer=False,
                  value_format=lambda v: f"${v / 1e12:.8f}", tick_format=lambda v: "T")
    figure = parse(chart)
    assert figure.findtext(".//tbody/tr/td") == "$0.00000002"
    assert next(iter(figure.iter(f"{SVG}rect"))).findtext(f"{SVG}title") == "a: Cost $0.00000002"
    assert {t.text for t in figure.iter(f"{SVG}text") if t.get("text-anchor") == "end"} >= {"T"}
