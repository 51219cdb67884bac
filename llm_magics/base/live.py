"""How far a page has drawn each live chart, as the llm-magics extension reports it (frontend.py takes the
reports on a kernel subshell, so they arrive while a cell trains). A live chart sends no new redraw while the
page has not drawn the last one: a page short of CPU then gets fewer updates instead of a queue of them that
grows until it stops answering clicks."""

# chart id -> the number of the last redraw a page reported drawn
DRAWN: dict[str, int] = {}


def page_drew(chart: str, redraw: int) -> None:
    DRAWN[chart] = max(redraw, DRAWN.get(chart, 0))
