"""The style sheet and scripts that report.html inlines (html_report.py): kept as text here so
that the page needs no file beside it and the package no data files.

- `ERROR_HOOK` runs first, in <head>: `window.onerror` (and console.error) write every error
  into <pre id="errors">, so that a reader, and the browser test, see them in the page.
- `SCRIPT` is the timeline's pan and zoom (vanilla JS, no library): the wheel zooms the time
  axis around the pointer, a drag pans, a double click or "reset" goes back to the whole step;
  the time axis is redrawn for the visible window. `#zoom=N` in the address opens the page
  zoomed N times on the middle of the step. When it has run, <body> gets data-ready="true".
"""

from __future__ import annotations

__all__ = ["STYLE", "ERROR_HOOK", "SCRIPT"]

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0 auto;
       max-width: 1240px; padding: 0 16px 48px; }
h1 { font-size: 22px; margin: 20px 0 2px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 3px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.limited { font-size: 16px; margin: 2px 0 10px; }
#numbers { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.metric { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; min-width: 150px; }
.metric .label { display: block; color: #666; font-size: 12px; }
.metric .value { font-size: 20px; font-weight: 600; }
.metric.bad .value { color: #B00020; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
code { font-size: 12px; background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
.toolbar { margin: 4px 0; font-size: 13px; color: #444; }
.toolbar button { font: inherit; padding: 1px 9px; margin-right: 4px; cursor: pointer; }
#timeline-svg { width: 100%; height: auto; user-select: none; }
#tl-plot { cursor: grab; }
#tl-plot.dragging { cursor: grabbing; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; margin: 4px 0 0; }
.swatch { display: inline-block; width: 12px; height: 12px; vertical-align: -2px; margin-right: 4px;
          border: 1px solid rgba(0,0,0,.15); }
.bar { display: flex; height: 26px; border: 1px solid #bbb; margin: 4px 0 2px; }
.bar span { display: block; height: 100%; }
.caption { color: #555; font-size: 13px; }
img.picture { max-width: 100%; border: 1px solid #eee; }
#errors { color: #B00020; background: #fff3f3; padding: 8px; white-space: pre-wrap; }
"""

ERROR_HOOK = """
window.hwsimErrors = [];
function hwsimShowErrors() {
  var box = document.getElementById('errors');
  if (box && window.hwsimErrors.length) { box.textContent = window.hwsimErrors.join('\\n'); box.hidden = false; }
}
window.onerror = function (message, source, line, column) {
  window.hwsimErrors.push(String(message) + ' (line ' + line + ':' + column + ')');
  hwsimShowErrors();
};
(function () {
  var original = console.error;
  console.error = function () {
    window.hwsimErrors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    hwsimShowErrors();
    return original.apply(console, arguments);
  };
})();
document.addEventListener('DOMContentLoaded', hwsimShowErrors);
"""

SCRIPT = """
(function () {
  var svg = document.getElementById('timeline-svg');
  if (svg) {
    var NS = 'http://www.w3.org/2000/svg';
    var plot = document.getElementById('tl-plot'), zoom = document.getElementById('tl-zoom');
    var axis = document.getElementById('tl-axis'), grid = document.getElementById('tl-grid');
    var readout = document.getElementById('tl-readout');
    var W = +svg.dataset.plotWidth, H = +svg.dataset.plotHeight, span = +svg.dataset.makespanS;
    var MAX_ZOOM = +svg.dataset.maxZoom, k = 1, tx = 0, drag = null;

    function clamp() {
      k = Math.min(MAX_ZOOM, Math.max(1, k));
      tx = Math.min(0, Math.max(W - W * k, tx));
    }
    function timeAt(x) { return (x - tx) / (W * k) * span; }
    function niceStep(raw) {
      var p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
      return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
    }
    function fmt(t, step, resolution) {   // a time in the unit of `step`, to `resolution` (default: step)
      var unit = step >= 1 ? ['s', 1] : step >= 1e-3 ? ['ms', 1e3] : ['us', 1e6];
      var digits = Math.max(0, -Math.floor(Math.log10((resolution || step) * unit[1]) + 1e-9));
      return (t * unit[1]).toFixed(Math.min(digits, 6)) + ' ' + unit[0];
    }
    function el(name, attrs, text) {
      var node = document.createElementNS(NS, name);
      for (var a in attrs) node.setAttribute(a, attrs[a]);
      if (text !== undefined) node.textContent = text;
      return node;
    }
    function render() {
      clamp();
      zoom.setAttribute('transform', 'translate(' + tx + ',0) scale(' + k + ',1)');
      while (axis.firstChild) axis.removeChild(axis.firstChild);
      while (grid.firstChild) grid.removeChild(grid.firstChild);
      var t0 = timeAt(0), t1 = timeAt(W), step = niceStep((t1 - t0) / 8);
      axis.appendChild(el('line', {x1: 0, x2: W, y1: 0, y2: 0, stroke: '#333'}));
      for (var t = Math.ceil(t0 / step) * step; t <= t1 + step * 1e-6; t += step) {
        var x = (t / span) * W * k + tx;
        axis.appendChild(el('line', {x1: x, x2: x, y1: 0, y2: 5, stroke: '#333'}));
        axis.appendChild(el('text', {x: x, y: 17, 'text-anchor': 'middle', 'class': 'tick'}, fmt(t, step)));
        grid.appendChild(el('line', {x1: x, x2: x, y1: 0, y2: H, stroke: '#bbb', 'stroke-width': 0.5}));
      }
      svg.dataset.zoom = k.toFixed(2);
      svg.dataset.windowS = t0.toPrecision(6) + ' ' + t1.toPrecision(6);
      document.getElementById('tl-window').textContent =
        'showing ' + fmt(t0, step, step / 10) + ' to ' + fmt(t1, step, step / 10) +
        (k > 1 ? ' (zoom x' + k.toFixed(1) + ')' : '');
    }
    function zoomAt(x, factor) {
      var old = k;
      k = k * factor;
      clamp();
      tx = x - (x - tx) * k / old;
      render();
    }
    function plotX(event) {
      var box = plot.getBoundingClientRect();
      return (event.clientX - box.left) / box.width * W;
    }
    plot.addEventListener('wheel', function (event) {
      event.preventDefault();
      zoomAt(plotX(event), Math.exp(-event.deltaY * 0.002));
    }, {passive: false});
    plot.addEventListener('pointerdown', function (event) {
      drag = {x: event.clientX, tx: tx};
      plot.classList.add('dragging');
      plot.setPointerCapture(event.pointerId);
    });
    plot.addEventListener('pointermove', function (event) {
      var shown = timeAt(W) - timeAt(0);
      if (readout) readout.textContent = 'pointer at ' + fmt(timeAt(plotX(event)), niceStep(shown / 8), shown / 1000);
      if (!drag) return;
      var box = plot.getBoundingClientRect();
      tx = drag.tx + (event.clientX - drag.x) / box.width * W;
      render();
    });
    plot.addEventListener('pointerup', function () { drag = null; plot.classList.remove('dragging'); });
    plot.addEventListener('dblclick', function () { k = 1; tx = 0; render(); });
    document.querySelectorAll('[data-zoom-action]').forEach(function (button) {
      button.addEventListener('click', function () {
        var action = button.dataset.zoomAction;
        if (action === 'reset') { k = 1; tx = 0; render(); } else { zoomAt(W / 2, action === 'in' ? 2 : 0.5); }
      });
    });
    var asked = /zoom=([0-9.]+)/.exec(window.location.hash);
    if (asked) { zoomAt(W / 2, +asked[1]); } else { render(); }
  }
  document.body.dataset.ready = 'true';
})();
"""
