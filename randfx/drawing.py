"""`randfx.draw(model, path)`: a picture of what randfx did to a model.

(This module is not called draw.py: importing a submodule `randfx.draw` would rebind the
package attribute `randfx.draw` from the function to the module.)

It draws the layer graph that `randfx.transform` built (analyze pass; one node per weight
layer, an edge u -> v when u's output reaches v's input through non-weight ops) rather
than the full FX graph: a GPT-2 has ~50 weight layers but thousands of FX nodes, and the
layer graph is also what the sparse backward walks. Rewritten layers are filled by
scheme, layers left dense are white with the reason as a tooltip. When the model has a
sparse backward (Config.sparse_backward), every layer the walks reach shows how many of
its rows the draw kept, its border width grows with that fraction, edges between reached
layers (the ones walks can take) are red, and unreachable layers are dashed.

The walks drawn are the model's last draw (the one its last training forward used) or,
before any training step, the walks its next training forward will draw (the sampler is
a pure function of key, step and weights), so drawing changes neither the model nor its
future walks.

Needs the optional extra `randfx[viz]` (pydot) and Graphviz's `dot` program for SVG/PNG;
`.dot` writes the Graphviz source and needs only pydot.
"""

from pathlib import Path

SCHEME_COLOURS = {"frozen": "#9ecae1", "random_base_lora": "#fdae6b", "subspace": "#a1d99b"}
FORMATS = ("svg", "png", "dot")


def _pydot():
    try:
        import pydot
    except ImportError:
        raise ImportError("randfx.draw needs pydot: pip install 'randfx[viz]' (and Graphviz's "
                          "`dot` program: apt-get install graphviz, brew install graphviz or "
                          "conda install graphviz)") from None
    return pydot


def _walk_rows(model):
    """{layer: (rows kept, out rows)} of the model's sparse-backward draw, or {}."""
    plan = getattr(model, "randfx_sparse_backward", None)
    if plan is None:
        return {}, []
    sample = plan.last_sample
    if sample is None:  # not trained yet: the walks of the next step (drawing is pure)
        sample = plan.sampler.sample(plan.step)
    rows = {name: (int((visits > 0).sum()), visits.numel())
            for name, visits in sample.visits.items()}
    return rows, list(plan.unreachable)


def _label(name, attributes, scheme, walk):
    shape = "x".join(map(str, attributes.get("shape", ())))
    lines = [name or "(root)", f"{attributes.get('type', '?')} {shape}", scheme or "dense"]
    if walk is not None:
        lines.append(f"walk rows {walk[0]}/{walk[1]}")
    return "\\n".join(lines)


def build(model):
    """The pydot.Dot of `model`'s layer graph (see the module docstring)."""
    pydot = _pydot()
    report = getattr(model, "randfx_report", None)
    graph = getattr(report, "layer_graph", None)
    if graph is None:
        raise ValueError(f"draw: model ({type(model).__name__}) has no layer graph; draw a "
                         "model returned by randfx.transform or randfx.load")
    walks, unreachable = _walk_rows(model)
    dot = pydot.Dot(graph_type="digraph", rankdir="TB", fontname="Helvetica")
    dot.set_node_defaults(shape="box", style="filled,rounded", fontname="Helvetica",
                          fontsize="10")
    for name, attributes in graph.nodes(data=True):
        scheme = report.rewritten.get(name)
        walk = walks.get(name)
        style = "filled,rounded" + (",dashed" if name in unreachable else "")
        node = pydot.Node(f'"{name}"', label=f'"{_label(name, attributes, scheme, walk)}"',
                          fillcolor=SCHEME_COLOURS.get(scheme, "white"), style=style,
                          tooltip=f'"{report.left_dense.get(name, scheme or "dense")}"')
        if walk is not None:
            node.set("color", "#cb181d")
            node.set("penwidth", f"{1 + 5 * walk[0] / max(1, walk[1]):.2f}")
        dot.add_node(node)
    for u, v in graph.edges():
        walked = u in walks and v in walks
        dot.add_edge(pydot.Edge(f'"{u}"', f'"{v}"', color="#cb181d" if walked else "#636363",
                                penwidth="2" if walked else "1"))
    legend = ["legend: fill = scheme (" + ", ".join(SCHEME_COLOURS) + "; white = dense)"]
    if walks:
        legend.append("red = reached by sparse-backward walks; border width = rows kept; "
                      "dashed = unreachable (dense backward)")
    dot.set_label('"' + "\\n".join(legend) + '"')
    dot.set("fontsize", "10")
    return dot


def draw(model, path) -> Path:
    """Write a picture of `model`'s layer graph to `path` (.svg, .png or .dot); returns the
    path. Rewritten layers are coloured by scheme; sparse-backward walks are overlaid."""
    path = Path(path)
    kind = path.suffix.lstrip(".").lower()
    if kind not in FORMATS:
        raise ValueError(f"draw: path {str(path)!r} must end in one of "
                         f"{['.' + f for f in FORMATS]}")
    dot = build(model)
    if kind == "dot":
        path.write_text(dot.to_string())
        return path
    try:
        data = dot.create(format=kind)
    except FileNotFoundError:
        raise RuntimeError("randfx.draw needs Graphviz's `dot` program for SVG/PNG (apt-get "
                           "install graphviz, brew install graphviz or conda install "
                           "graphviz); write a .dot file to skip it") from None
    path.write_bytes(data)
    return path
