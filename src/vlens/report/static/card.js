/* vlens: per-sample card, shared by the report and the viewer.
   Every value from data is written with textContent; image URLs must match SAFE_SRC. */
"use strict";
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function safeSrc(src, pattern) {
  return typeof src === "string" && pattern.test(src) ? src : null;
}
function img(src, alt) {
  /* An <img> that turns into a "no image" placeholder when the file cannot be loaded. */
  const im = el("img"); im.src = src; im.alt = alt;
  im.addEventListener("error", () => im.replaceWith(el("div", "noimg", "no image")));
  return im;
}
function fmt(v, d) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return v.toFixed(d === undefined ? 2 : d);
  return String(v);
}
function buildCard(c, pattern) {
  const card = el("div", "card");
  card.dataset.sampleId = c.id;
  const left = el("div");
  const imgs = el("div", "imgs");
  for (const [k, name] of [["o", "original"], ["ov", "saliency overlay"], ["m", "masked view"]]) {
    const fig = el("figure");
    const src = safeSrc((c.img || {})[k], pattern);
    if (src) fig.appendChild(img(src, name));
    else fig.appendChild(el("div", "noimg", "no image"));
    fig.appendChild(el("figcaption", null, name));
    imgs.appendChild(fig);
  }
  left.appendChild(imgs);
  const right = el("div");
  const v = el("div", "verdict");
  v.appendChild(el("span", null, "label "));
  v.appendChild(el("b", "label", c.label));
  v.appendChild(el("span", null, " · predicted "));
  v.appendChild(el("b", c.correct === true ? "ok pred" : (c.correct === false ? "bad pred" : "pred"), c.pred));
  if (c.correct === true) v.appendChild(el("span", "ok", " ✓"));
  if (c.correct === false) v.appendChild(el("span", "bad", " ✗"));
  right.appendChild(v);
  const dl = el("dl");
  const row = (k, val) => { if (val === null || val === undefined || val === "") return;
    dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", "f-" + k.replace(/\W+/g, "-"), val)); };
  row("id", c.id);
  row("confidence", c.conf === null || c.conf === undefined ? null : fmt(c.conf, 3));
  row("focus score", c.focus === null || c.focus === undefined ? null : fmt(c.focus, 1) + " / 5");
  row("energy on object", c.energy === null || c.energy === undefined ? null : fmt(c.energy, 2));
  row("object visible", c.vis);
  row("description", c.desc);
  row("justification", c.just);
  if (Array.isArray(c.distractors) && c.distractors.length) row("distractors", c.distractors.join(", "));
  if (c.status && c.status !== "ok") row("status", c.status + (c.error ? ": " + c.error : ""));
  right.appendChild(dl);
  if (Array.isArray(c.ground) && c.ground.length) {
    const bars = el("div", "bars");
    bars.appendChild(el("h4", null, "Concept grounding"));
    bars.appendChild(el("div", "note", "dark bar: attended region (masked view) · light bar: whole image"));
    for (const [name, g, w] of c.ground) {
      const b = el("div", "bar");
      const nm = el("span", "nm", name); nm.title = String(name);
      b.appendChild(nm);
      const tr = el("div", "track");
      const fg = el("div", "fillg"); fg.style.width = Math.max(0, Math.min(1, +g || 0)) * 100 + "%";
      const fc = el("div", "fillc"); fc.style.width = Math.max(0, Math.min(1, +w || 0)) * 100 + "%";
      tr.appendChild(fg); tr.appendChild(fc); b.appendChild(tr);
      b.appendChild(el("span", null, fmt(g, 2)));
      bars.appendChild(b);
    }
    right.appendChild(bars);
  }
  card.appendChild(left); card.appendChild(right);
  return card;
}
