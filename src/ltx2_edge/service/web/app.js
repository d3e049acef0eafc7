// ltx2-edge's page: submits the form to POST /v1/videos, lists the queue, follows each running job's
// server-sent events (read with fetch, so the Bearer token can go in a header), plays finished clips from a
// blob (fetched the same way) and shows their report table. Never puts the token in a URL.
"use strict";

const form = document.getElementById("create");
const queue = document.getElementById("queue");
const errorBox = document.getElementById("error");
const cards = new Map(); // video id -> {el, following}
const TERMINAL = new Set(["completed", "failed", "cancelled"]);

form.token.value = localStorage.getItem("ltx2-edge-token") || "";

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const token = form.token.value.trim();
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const res = await fetch(path, opts);
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try { message = (await res.json()).error.message; } catch (e) { /* not our JSON */ }
    throw new Error(message);
  }
  return res;
}

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children || []) node.appendChild(child);
  return node;
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.textContent = "";
  localStorage.setItem("ltx2-edge-token", form.token.value.trim());
  const body = { prompt: form.prompt.value, size: form.size.value.trim() };
  for (const name of ["num_frames", "frame_rate", "num_inference_steps", "seed"]) {
    if (form[name].value !== "") body[name] = Number(form[name].value);
  }
  for (const name of ["pipeline", "guidance", "negative_prompt"]) {
    if (form[name].value !== "") body[name] = form[name].value;
  }
  if (form.image.files.length) {
    body.images = [{ data: await readFile(form.image.files[0]), frame_idx: 0, strength: 1.0 }];
  }
  try {
    const res = await api("/v1/videos", {
      method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
    });
    const video = await res.json();
    render(video, true);
    follow(video.id);
  } catch (e) {
    errorBox.textContent = e.message;
  }
});

function reportTable(report) {
  const table = el("table", { class: "report" });
  table.appendChild(el("tr", {}, ["stage", "time s", "peak GiB", "technique"].map((t) => el("th", { text: t }))));
  for (const s of report.stages || []) {
    table.appendChild(el("tr", {}, [s.stage, s.seconds.toFixed(2), (s.peak_bytes / 2 ** 30).toFixed(2), s.technique]
      .map((t) => el("td", { text: String(t) }))));
  }
  table.appendChild(el("tr", {}, ["total", (report.total_seconds || 0).toFixed(2), "", ""]
    .map((t) => el("td", { text: t }))));
  return table;
}

function render(video, prepend) {
  let card = cards.get(video.id);
  if (!card) {
    const node = el("article", { class: "job", "data-id": video.id }, [
      el("header", {}, [
        el("span", { class: "prompt", text: video.prompt || "" }),
        el("span", { class: "size", text: video.size + ", " + video.seconds + " s" }),
        el("span", { class: "status" }),
        el("button", { class: "cancel", type: "button", text: "Cancel" }),
        el("button", { class: "delete", type: "button", text: "Delete" }),
      ]),
      el("progress", { max: "100", value: "0" }),
      el("div", { class: "detail" }),
      el("div", { class: "result" }),
    ]);
    node.querySelector(".cancel").addEventListener("click", () => act(video.id, "cancel"));
    node.querySelector(".delete").addEventListener("click", () => act(video.id, "delete"));
    if (prepend) queue.prepend(node); else queue.appendChild(node);
    card = { el: node, following: false, shown: false };
    cards.set(video.id, card);
  }
  const node = card.el;
  const status = node.querySelector(".status");
  status.textContent = video.status;
  status.className = "status " + video.status;
  node.querySelector("progress").value = video.progress;
  node.querySelector(".cancel").hidden = TERMINAL.has(video.status);
  if (video.error) node.querySelector(".detail").textContent = video.error.message;
  if (video.status === "completed" && !card.shown && !video.expired) {
    card.shown = true;
    showClip(video, node.querySelector(".result"));
  }
}

async function showClip(video, box) {
  try {
    const res = await api("/v1/videos/" + video.id + "/content");
    const url = URL.createObjectURL(await res.blob());
    box.appendChild(el("video", { controls: "", src: url, preload: "auto" }));
    if (video.report) box.appendChild(reportTable(video.report));
  } catch (e) {
    box.textContent = e.message;
  }
}

async function act(id, what) {
  errorBox.textContent = "";
  try {
    if (what === "cancel") {
      render(await (await api("/v1/videos/" + id + "/cancel", { method: "POST" })).json());
    } else {
      await api("/v1/videos/" + id, { method: "DELETE" });
      const card = cards.get(id);
      if (card) card.el.remove();
      cards.delete(id);
    }
  } catch (e) {
    errorBox.textContent = e.message;
  }
}

function describe(kind, data) {
  if (kind === "step") {
    return data.stage + ": step " + data.step + "/" + data.total + ", ETA " + data.eta_seconds.toFixed(1) + " s";
  }
  if (kind === "stage") return data.stage + (data.detail ? ": " + data.detail : "");
  if (kind === "stage_done") return data.stage + " done in " + data.seconds.toFixed(2) + " s";
  if (kind === "failed") return data.message || "failed";
  return kind;
}

async function follow(id) {
  const card = cards.get(id);
  if (!card || card.following) return;
  card.following = true;
  try {
    const res = await api("/v1/videos/" + id + "/events");
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let kind = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) kind = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (!data) continue;
        const payload = JSON.parse(data);
        const node = card.el;
        if (typeof payload.progress === "number") node.querySelector("progress").value = payload.progress;
        node.querySelector(".detail").textContent = describe(kind, payload);
        if (kind === "started") render({ id, status: "in_progress", progress: payload.progress || 0 });
        if (TERMINAL.has(kind)) {
          render(await (await api("/v1/videos/" + id)).json());
          return;
        }
      }
    }
  } catch (e) {
    card.el.querySelector(".detail").textContent = e.message;
  } finally {
    card.following = false;
  }
}

async function refresh() {
  try {
    const list = await (await api("/v1/videos?limit=50&order=desc")).json();
    for (const video of list.data.slice().reverse()) {
      render(video, true);
      if (!TERMINAL.has(video.status)) follow(video.id);
    }
  } catch (e) {
    errorBox.textContent = e.message;
  }
}

async function health() {
  try {
    const state = await (await fetch("/health")).json();
    document.getElementById("health").textContent = state.status + ", " + state.queued + " queued";
  } catch (e) { /* the next try will tell */ }
}

refresh();
health();
setInterval(health, 3000);
