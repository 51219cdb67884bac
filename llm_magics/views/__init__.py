"""What the notebook shows; the numbers come from the modules above (attention, lens, runs, generation).

- `training_chart`: the live training chart (plotly FigureWidget) with Stop and a saved-notebook fallback
- `playground`: the sampling playground (a control per setting, runs side by side, token probabilities)
- `streamed_text`: a generation or chat turn streaming into the cell
- `attention` + `attention.js`/`.css`: the attention widget (head, model, matrix and lens views; anywidget)
- `lens`: the logit lens' saved table
- `heatmap` + `heatmap.js`/`.css`: the patching and attribution heatmap (anywidget)
- `assets`: each anywidget view's module and stylesheet, with the shared `dom.js` and `theme.css` put in
"""

# Registers the drawers of the results that offer `.view()` (base/drawing.py).
from . import heatmap  # noqa: F401
