/* vlens report: galleries and sample cards from the JSON block (rendered with textContent). */
(function () {
  const DATA = JSON.parse(document.getElementById("vlens-data").textContent);
  const SAFE = /^img\/[A-Za-z0-9_.-]+\.png$/;
  const modal = document.getElementById("modal");
  const body = document.getElementById("modal-body");
  const title = document.getElementById("modal-title");
  const back = document.getElementById("modal-back");
  let lastGroup = null;

  function thumb(key) {
    const c = DATA.cards[key];
    const b = el("button", "thumb" + (c.correct === true ? " ok" : c.correct === false ? " bad" : ""));
    b.type = "button"; b.dataset.key = key; b.title = c.id;
    const src = safeSrc((c.img || {}).o, SAFE);
    if (src) b.appendChild(img(src, c.id));
    else b.appendChild(el("span", "noimg", "no image"));
    b.appendChild(el("span", "cap", (c.pred === null ? "?" : c.pred) +
      (c.focus === null || c.focus === undefined ? "" : " · " + c.focus)));
    return b;
  }
  function gallery(gkey) {
    const g = DATA.groups[gkey];
    const box = el("div", "gallery");
    box.dataset.group = gkey;
    const shown = g.ids.length;
    let head = g.title + " — " + g.total + " sample" + (g.total === 1 ? "" : "s");
    if (shown < g.total) head += " (showing " + shown + ")";
    box.appendChild(el("div", "gallery-title", head));
    if (g.missing) box.appendChild(el("div", "note", g.missing + " id(s) not found in the tables"));
    const strip = el("div", "strip");
    g.ids.forEach(k => strip.appendChild(thumb(k)));
    if (!shown) box.appendChild(el("p", "empty", "No samples in this group."));
    box.appendChild(strip);
    return box;
  }
  function openModal() { modal.hidden = false; }
  function closeModal() { modal.hidden = true; body.replaceChildren(); lastGroup = null; }
  function showGroup(gkey, targetId) {
    if (targetId) {
      const t = document.getElementById(targetId);
      t.replaceChildren(gallery(gkey));
      document.querySelectorAll('[data-target="' + targetId + '"]').forEach(b =>
        b.setAttribute("aria-pressed", b.dataset.group === gkey ? "true" : "false"));
      return;
    }
    lastGroup = gkey; back.hidden = true;
    title.textContent = DATA.groups[gkey].title;
    body.replaceChildren(gallery(gkey)); openModal();
  }
  function showCard(key) {
    const c = DATA.cards[key];
    title.textContent = "Sample " + c.id;
    back.hidden = lastGroup === null || modal.hidden;
    body.replaceChildren(buildCard(c, SAFE)); openModal();
  }
  document.addEventListener("click", ev => {
    const t = ev.target.closest("[data-key],[data-group]");
    if (t && t.dataset.key && DATA.cards[t.dataset.key]) { ev.preventDefault(); showCard(t.dataset.key); }
    else if (t && t.dataset.group && DATA.groups[t.dataset.group]) {
      ev.preventDefault(); showGroup(t.dataset.group, t.dataset.target);
    }
  });
  back.addEventListener("click", () => { if (lastGroup) showGroup(lastGroup); });
  document.getElementById("modal-close").addEventListener("click", closeModal);
  modal.addEventListener("click", ev => { if (ev.target === modal) closeModal(); });
  document.addEventListener("keydown", ev => { if (ev.key === "Escape" && !modal.hidden) closeModal(); });
})();
