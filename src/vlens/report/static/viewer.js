/* vlens viewer: server-side filtered pages from /api/samples; data rendered with textContent. */
(function () {
  const SAFE = /^\/img\/\d+\/(o|ov|m)$/;
  const $ = id => document.getElementById(id);
  const fields = { cls: "f-cls", correct: "f-correct", fmin: "f-fmin", fmax: "f-fmax", group: "f-group",
    concept: "f-concept", cmin: "f-cmin", sort: "f-sort", order: "f-order", per_page: "f-per" };
  if ($("f-status")) fields.status = "f-status";
  let page = 1, pages = 1, seq = 0;

  function params() {
    const q = new URLSearchParams();
    for (const [k, id] of Object.entries(fields)) {
      const v = $(id).value;
      if (v !== "" && !(k === "cmin" && !$("f-concept").value)) q.set(k, v);
    }
    q.set("page", String(page));
    return q;
  }
  function thumb(it) {
    const b = el("button", "thumb" + (it.correct === true ? " ok" : it.correct === false ? " bad" : ""));
    b.type = "button"; b.dataset.row = String(it.row); b.title = it.id;
    const src = safeSrc(it.img.o, SAFE);
    if (src) b.appendChild(img(src, it.id));
    b.appendChild(el("span", "cap", (it.label === null ? "?" : it.label) + " → " + (it.pred === null ? "?" : it.pred)));
    b.appendChild(el("span", "sub", "focus " + fmt(it.focus, 1) + " · conf " + fmt(it.conf, 2)));
    return b;
  }
  async function load() {
    const my = ++seq;
    const qs = params().toString();
    const res = await fetch("/api/samples?" + qs);
    const data = await res.json();
    if (my !== seq) return;
    if (!res.ok) { $("error").hidden = false; $("error").textContent = data.error || "error"; return; }
    $("error").hidden = true;
    pages = data.pages;
    const box = $("results");
    box.replaceChildren(...data.items.map(thumb));
    if (!data.items.length) box.appendChild(el("p", "empty", "No samples match these filters."));
    $("status").textContent = data.total + " samples · page " + data.page + " of " + data.pages;
    $("prev").disabled = page <= 1; $("next").disabled = page >= pages;
    box.dataset.query = qs;  /* what is on screen (tests wait on it) */
  }
  async function openCard(row) {
    const res = await fetch("/api/sample/" + encodeURIComponent(row));
    if (!res.ok) return;
    const c = await res.json();
    $("modal-title").textContent = "Sample " + c.id;
    $("modal-body").replaceChildren(buildCard(c, SAFE));
    $("modal").hidden = false;
  }
  for (const id of Object.values(fields)) $(id).addEventListener("change", () => { page = 1; load(); });
  $("prev").addEventListener("click", () => { if (page > 1) { page--; load(); } });
  $("next").addEventListener("click", () => { if (page < pages) { page++; load(); } });
  $("f-reset").addEventListener("click", () => {
    for (const [k, id] of Object.entries(fields)) $(id).value = k === "cmin" ? "0.5" : k === "order" ? "desc" : k === "per_page" ? "60" : "";
    page = 1; load();
  });
  $("results").addEventListener("click", ev => { const t = ev.target.closest("[data-row]"); if (t) openCard(t.dataset.row); });
  $("modal-close").addEventListener("click", () => { $("modal").hidden = true; });
  $("modal").addEventListener("click", ev => { if (ev.target === $("modal")) $("modal").hidden = true; });
  document.addEventListener("keydown", ev => { if (ev.key === "Escape") $("modal").hidden = true; });
  load();
})();
