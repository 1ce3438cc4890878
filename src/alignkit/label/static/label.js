// alignkit label: the page script of every task page. Vanilla JS, no build step, no network but
// this server. Model text is only ever inserted with textContent (never innerHTML).
"use strict";
(() => {
  const $ = (sel, el = document) => el.querySelector(sel);
  const $$ = (sel, el = document) => Array.from(el.querySelectorAll(sel));
  const page = document.body.dataset.page;
  const inTextBox = () => ["TEXTAREA", "INPUT", "SELECT"].includes(document.activeElement?.tagName);

  if (page === "home") {
    document.addEventListener("keydown", (e) => {
      const link = $(`a[data-key="${e.key}"]`);
      if (link && !inTextBox()) location.assign(link.href);
    });
    return;
  }
  if (page !== "task") return;

  const data = JSON.parse($("#item-data").textContent);
  const status = $("#status");
  let flagged = false;
  let busy = false;
  const say = (msg, bad = false) => { status.textContent = msg; status.className = bad ? "bad" : "ok"; };

  // The label is committed by the server before it answers; only then does the page move on.
  async function send(payload) {
    if (busy) return;
    busy = true;
    say("saving…");
    try {
      const r = await fetch("/api/label", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": data.csrf },
        body: JSON.stringify({ task: data.task, item: data.item, flagged, note: $("#note").value, ...payload }),
      });
      const out = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(out.error || `HTTP ${r.status}`);
      say("saved");
      location.assign(`/task/${encodeURIComponent(data.task)}`);
    } catch (err) {
      say(`not saved: ${err.message}; try again`, true);
      busy = false;
    }
  }

  // ---- one handler per task: value() is the label or null (after saying what is missing) ----

  function cardPicker(cards, onChange) {
    let selected = 0;
    const show = () => { cards.forEach((c, n) => c.classList.toggle("selected", n === selected)); onChange(); };
    cards.forEach((c, n) => c.addEventListener("click", () => { selected = n; show(); }));
    return {
      get: () => selected,
      set: (n) => { selected = (n + cards.length) % cards.length; show(); },
      show,
    };
  }

  function rankTask() {
    const cards = $$(".card");
    const ranks = new Array(data.k).fill(null);
    const render = () => {
      cards.forEach((c) => {
        const i = +c.dataset.index;
        $$(".rank-buttons button", c).forEach((b) => b.classList.toggle("on", +b.dataset.rank === ranks[i]));
      });
      $$("#tiers .chip").forEach((chip) => chip.remove());
      cards.forEach((c) => {
        const i = +c.dataset.index;
        if (ranks[i] === null) return;
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.draggable = true;
        chip.dataset.index = String(i);
        chip.textContent = $(".name", c).textContent;
        $(`.tier[data-rank="${ranks[i]}"]`).appendChild(chip);
      });
    };
    const picker = cardPicker(cards, render);
    const setRank = (i, r) => { ranks[i] = r; render(); };
    cards.forEach((c, n) => {
      $$(".rank-buttons button", c).forEach((b) => b.addEventListener("click", (e) => {
        e.stopPropagation();
        picker.set(n);
        setRank(+c.dataset.index, +b.dataset.rank);
      }));
    });
    document.addEventListener("dragstart", (e) => {
      const from = e.target.closest?.("[data-index]");
      if (from) e.dataTransfer.setData("text/plain", from.dataset.index);
    });
    $$(".tier").forEach((tier) => {
      tier.addEventListener("dragover", (e) => { e.preventDefault(); tier.classList.add("over"); });
      tier.addEventListener("dragleave", () => tier.classList.remove("over"));
      tier.addEventListener("drop", (e) => {
        e.preventDefault();
        tier.classList.remove("over");
        const i = parseInt(e.dataTransfer.getData("text/plain"), 10);
        if (i >= 0 && i < data.k) setRank(i, +tier.dataset.rank);
      });
    });
    picker.show();
    return {
      key(e) {
        if (e.key === "ArrowRight" || e.key === "ArrowDown") return picker.set(picker.get() + 1), true;
        if (e.key === "ArrowLeft" || e.key === "ArrowUp") return picker.set(picker.get() - 1), true;
        const r = parseInt(e.key, 10);
        if (r >= 1 && r <= data.k) {
          setRank(+cards[picker.get()].dataset.index, r);
          picker.set(picker.get() + 1);
          return true;
        }
        return false;
      },
      value() {
        if (ranks.includes(null)) return say("give every response a rank first", true), null;
        return { ranks };
      },
    };
  }

  function chooseTask() {
    let choice = null;
    const buttons = $$("[data-choice]");
    const cards = $$(".card");
    const pick = (c) => {
      choice = c;
      buttons.forEach((b) => b.classList.toggle("on", b.dataset.choice === c));
      cards.forEach((card, n) => card.classList.toggle("selected", c === "tie" || c === ["A", "B"][n]));
      cards.forEach((card) => card.classList.toggle("rejected", c === "both_bad"));
    };
    buttons.forEach((b) => b.addEventListener("click", () => pick(b.dataset.choice)));
    const keys = { 1: "A", 2: "B", 3: "tie", 4: "both_bad", a: "A", b: "B", t: "tie", x: "both_bad" };
    return {
      key(e) { if (keys[e.key]) return pick(keys[e.key]), true; return false; },
      value() { return choice ? { choice } : (say("choose A, B, tie or both bad first", true), null); },
    };
  }

  function rateTask() {
    const cards = $$(".card");
    const ratings = new Array(data.k).fill(null);
    const flags = Array.from({ length: data.k }, () => new Set());
    const render = () => cards.forEach((c) => {
      const i = +c.dataset.index;
      $$("[data-rating]", c).forEach((b) => b.classList.toggle("on", +b.dataset.rating === ratings[i]));
      $$("[data-flag]", c).forEach((b) => b.classList.toggle("on", flags[i].has(b.dataset.flag)));
    });
    const picker = cardPicker(cards, render);
    const toggle = (i, flag) => { flags[i].has(flag) ? flags[i].delete(flag) : flags[i].add(flag); render(); };
    cards.forEach((c, n) => {
      const i = +c.dataset.index;
      $$("[data-rating]", c).forEach((b) => b.addEventListener("click", (e) => {
        e.stopPropagation(); picker.set(n); ratings[i] = +b.dataset.rating; render();
      }));
      $$("[data-flag]", c).forEach((b) => b.addEventListener("click", (e) => {
        e.stopPropagation(); picker.set(n); toggle(i, b.dataset.flag);
      }));
    });
    picker.show();
    return {
      key(e) {
        if (e.key === "ArrowRight" || e.key === "ArrowDown") return picker.set(picker.get() + 1), true;
        if (e.key === "ArrowLeft" || e.key === "ArrowUp") return picker.set(picker.get() - 1), true;
        const i = +cards[picker.get()].dataset.index;
        const r = parseInt(e.key, 10);
        if (r >= 1 && r <= 7) { ratings[i] = r; render(); picker.set(picker.get() + 1); return true; }
        const f = "qwertyuio".indexOf(e.key);
        if (f >= 0 && f < data.flags.length) return toggle(i, data.flags[f]), true;
        return false;
      },
      value() {
        if (ratings.includes(null)) return say("rate every response first", true), null;
        return { ratings, flags: flags.map((s) => data.flags.filter((f) => s.has(f))) };
      },
    };
  }

  function spansTask() {
    const box = $("#span-text");
    const text = data.text;
    const runs = [];  // words and whitespace: {s, e, word}
    for (const m of text.matchAll(/\s+|\S+/g)) runs.push({ s: m.index, e: m.index + m[0].length, word: /\S/.test(m[0]) });
    const words = runs.filter((r) => r.word);
    const errors = [];
    let anchor = null, cursor = 0, focus = null;  // a selection is words [min(anchor, focus), max(...)]
    const selection = () => (anchor === null ? null : [Math.min(anchor, focus), Math.max(anchor, focus)]);

    function render() {
      box.textContent = "";
      const sel = selection();
      runs.forEach((run) => {
        const el = document.createElement("span");
        el.textContent = text.slice(run.s, run.e);
        el.dataset.s = String(run.s);
        const hit = errors.filter((x) => x.start < run.e && run.s < x.end);
        if (hit.length) {
          el.classList.add("mark", `cat${data.categories.indexOf(hit[hit.length - 1]["error type"]) + 1}`);
          el.title = hit.map((x) => x["error type"]).join(", ");
        }
        const w = words.indexOf(run);
        if (sel && w >= sel[0] && w <= sel[1]) el.classList.add("sel");
        if (w === cursor && run.word) el.classList.add("cursor");
        box.appendChild(el);
      });
      const list = $("#span-list");
      list.textContent = "";
      errors.forEach((x, n) => {
        const li = document.createElement("li");
        li.className = `cat${data.categories.indexOf(x["error type"]) + 1}`;
        li.textContent = `${x["error type"]}: “${text.slice(x.start, x.end)}” `;
        const del = document.createElement("button");
        del.type = "button";
        del.textContent = "×";
        del.title = "remove";
        del.addEventListener("click", () => { errors.splice(n, 1); render(); });
        li.appendChild(del);
        list.appendChild(li);
      });
    }
    const wordAt = (node) => {
      const el = node?.nodeType === 1 ? node : node?.parentElement;
      const span = el?.closest?.("#span-text > span");
      if (!span) return null;
      const s = +span.dataset.s;
      let w = words.findIndex((r) => r.s >= s);
      return w < 0 ? words.length - 1 : w;
    };
    box.addEventListener("mouseup", () => {
      const sel = window.getSelection();
      if (!sel || sel.isCollapsed) return;
      const a = wordAt(sel.anchorNode), b = wordAt(sel.focusNode);
      if (a === null || b === null) return;
      anchor = a; focus = b; cursor = b;
      sel.removeAllRanges();
      render();
    });
    const mark = (category) => {
      const sel = words.length ? selection() : null;
      if (!sel) return say("select some words first", true);
      errors.push({ "error type": category, explanation: "", start: words[sel[0]].s, end: words[sel[1]].e });
      anchor = focus = null;
      say("");
      render();
    };
    $$("[data-category]").forEach((b) => b.addEventListener("click", () => mark(b.dataset.category)));
    render();
    return {
      key(e) {
        if ((e.key === "ArrowRight" || e.key === "ArrowLeft") && words.length) {
          cursor = Math.max(0, Math.min(words.length - 1, cursor + (e.key === "ArrowRight" ? 1 : -1)));
          if (e.shiftKey) { if (anchor === null) anchor = e.key === "ArrowRight" ? cursor - 1 : cursor + 1; focus = cursor; }
          else anchor = focus = null;
          if (anchor !== null) anchor = Math.max(0, Math.min(words.length - 1, anchor));
          render();
          return true;
        }
        const c = parseInt(e.key, 10);
        if (c >= 1 && c <= data.categories.length) return mark(data.categories[c - 1]), true;
        if (e.key === "u") return errors.pop(), render(), true;
        if (e.key === "m") return $("#missing").focus(), true;
        return false;
      },
      value() {
        const missing = $("#missing").value.trim();
        return {
          errors: errors.slice(),
          "missing-info": missing ? [{ "error type": $("#missing-type").value, explanation: missing }] : [],
        };
      },
    };
  }

  const handler = { rank: rankTask, choose: chooseTask, rate: rateTask, spans: spansTask }[data.task]();
  const submit = () => { const v = handler.value(); if (v !== null) send({ value: v }); };
  const toggleFlag = () => {
    flagged = !flagged;
    $("#flag").classList.toggle("on", flagged);
    $("#flag").setAttribute("aria-pressed", String(flagged));
  };
  $("#submit").addEventListener("click", submit);
  $("#skip").addEventListener("click", () => send({ skip: true }));
  $("#flag").addEventListener("click", toggleFlag);

  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.metaKey) return;
    if (inTextBox()) {
      if (e.key === "Escape") document.activeElement.blur();
      else if (e.key === "Enter" && e.ctrlKey) { e.preventDefault(); submit(); }
      return;
    }
    if (e.ctrlKey) return;
    let handled = true;
    if (e.key === "Enter") submit();
    else if (e.key === "f") toggleFlag();
    else if (e.key === "s") send({ skip: true });
    else if (e.key === "n") $("#note").focus();
    else handled = handler.key(e);
    if (handled) e.preventDefault();
  });
})();
