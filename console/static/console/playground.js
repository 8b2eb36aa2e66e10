/* The console's playground: one call to the gateway's own invocation route, as any client makes it.
 *
 * The answer is shown as it arrives (a stream is read with fetch and a ReadableStream, event by event);
 * then the call's record is looked up in the usage ledger by its X-Request-Id, for its cost and, through a
 * traffic route, the destination that answered. The ledger is written in batches (about every second), so
 * the lookup is retried for a few seconds. A gateway key typed here is kept in this page only: it is sent
 * in this call's Authorization header and nowhere else.
 */
"use strict";

(function () {
  const form = document.getElementById("console-playground-form");
  if (!form) {
    return;
  }
  const $ = (id) => document.getElementById(id);
  const operation = form.dataset.operation;
  const LOOKUP_TRIES = 20;
  const LOOKUP_INTERVAL_MS = 500;

  function newRequestId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function payload() {
    const text = $("console-input").value;
    if (operation === "embeddings") {
      return { input: text };
    }
    const body = operation === "chat" ? { messages: [{ role: "user", content: text }] } : { prompt: text };
    const maxTokens = $("console-max-tokens").value;
    const temperature = $("console-temperature").value;
    if (maxTokens) {
      body.max_tokens = parseInt(maxTokens, 10);
    }
    if (temperature) {
      body.temperature = parseFloat(temperature);
    }
    const stream = $("console-stream");
    if (stream && stream.checked) {
      body.stream = true;
    }
    return body;
  }

  function show(id, text) {
    $(id).textContent = text;
  }

  function ms(value) {
    return value.toFixed(1) + " ms";
  }

  function tokens(usage) {
    if (!usage) {
      return "—";
    }
    const out = usage.completion_tokens === undefined || usage.completion_tokens === null ? "—" : usage.completion_tokens;
    return (usage.prompt_tokens ?? "—") + " / " + out;
  }

  function errorText(body, status) {
    if (body && typeof body === "object") {
      if (body.error && body.error.message) {
        return body.error.message;
      }
      if (typeof body.detail === "string") {
        return body.detail;
      }
      return JSON.stringify(body, null, 2);
    }
    return "HTTP " + status;
  }

  function answerText(body) {
    if (operation === "embeddings") {
      const vectors = (body.data || []).map((item) => item.embedding);
      if (!vectors.length) {
        return JSON.stringify(body, null, 2);
      }
      const first = vectors[0];
      const head = Array.isArray(first) ? first.slice(0, 8).join(", ") : String(first).slice(0, 60);
      return vectors.length + " vector(s) of " + (Array.isArray(first) ? first.length : "?") +
        " dimensions: [" + head + (Array.isArray(first) && first.length > 8 ? ", …" : "") + "]";
    }
    const choice = (body.choices || [])[0] || {};
    if (operation === "chat") {
      return choice.message && typeof choice.message.content === "string" ? choice.message.content
        : JSON.stringify(choice.message || body, null, 2);
    }
    return typeof choice.text === "string" ? choice.text : JSON.stringify(body, null, 2);
  }

  function chunkText(chunk) {
    const choice = (chunk.choices || [])[0];
    if (!choice) {
      return "";
    }
    if (operation === "chat") {
      return (choice.delta && typeof choice.delta.content === "string") ? choice.delta.content : "";
    }
    return typeof choice.text === "string" ? choice.text : "";
  }

  async function readStream(response, started) {
    const answer = $("console-answer");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let usage = null;
    let first = true;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        break;
      }
      if (first) {
        show("console-ttfb", ms(performance.now() - started));
        first = false;
      }
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) {
            continue;
          }
          const data = line.slice(5).trim();
          if (data === "[DONE]") {
            continue;
          }
          const chunk = JSON.parse(data);
          if (chunk.error) {
            answer.append("\n[stream ended by an error: " + (chunk.error.code || "") + " " +
              (chunk.error.message || "") + "]");
            answer.dataset.state = "error";
            continue;
          }
          if (chunk.usage) {
            usage = chunk.usage;
          }
          answer.append(chunkText(chunk));
        }
      }
    }
    return usage;
  }

  async function lookUp(requestId) {
    const note = $("console-ledger-note");
    const url = form.dataset.ledgerUrl.replace("REQUEST_ID", encodeURIComponent(requestId)) + "?name=" +
      encodeURIComponent(form.dataset.name);
    for (let attempt = 0; attempt < LOOKUP_TRIES; attempt++) {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) {
        const record = await response.json();
        show("console-cost", record.cost_usd);
        show("console-tokens", tokens(record));
        show("console-served-by", record.endpoint ? record.endpoint + (record.route ? " (through " + record.route + ")" : "") +
          (record.provider ? " — " + record.provider + (record.model ? " " + record.model : "") : "") : "—");
        note.textContent = "From the usage ledger: the gateway measured " + ms(record.latency_ms) +
          (record.ttfb_ms !== null ? " (first byte " + ms(record.ttfb_ms) + ")" : "") + ".";
        form.dataset.ledger = "found";
        return;
      }
      if (response.status !== 404) {
        note.textContent = "The ledger could not be read (HTTP " + response.status + ").";
        return;
      }
      note.textContent = "Waiting for the usage ledger to record the call…";
      await new Promise((resolve) => setTimeout(resolve, LOOKUP_INTERVAL_MS));
    }
    note.textContent = "The call is not in the usage ledger yet (it is written in batches; with GATEWAY_USAGE_LEDGER " +
      "off it is not written at all): look it up later by its request id.";
    form.dataset.ledger = "missing";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const send = $("console-send");
    const answer = $("console-answer");
    const key = $("console-key");
    const requestId = newRequestId();
    const body = payload();
    const headers = { "Content-Type": "application/json", Accept: body.stream ? "text/event-stream" : "application/json",
      "X-Request-Id": requestId };
    if (key && key.value) {
      headers.Authorization = "Bearer " + key.value.trim();
    }
    $("console-result").hidden = false;
    answer.textContent = "";
    delete answer.dataset.state;
    for (const id of ["console-status", "console-latency", "console-ttfb", "console-tokens", "console-cost",
      "console-served-by"]) {
      show(id, "—");
    }
    show("console-request-id", requestId);
    $("console-ledger-note").textContent = "";
    form.dataset.state = "sending";
    delete form.dataset.ledger;
    send.disabled = true;
    const started = performance.now();
    try {
      // Not the admin's session: the invocation route authenticates by gateway key only.
      const response = await fetch(form.dataset.url, { method: "POST", headers, body: JSON.stringify(body),
        credentials: "omit" });
      const answered = response.headers.get("X-Request-Id") || requestId;
      show("console-request-id", answered);
      show("console-status", response.status + " " + response.statusText);
      const streamed = (response.headers.get("Content-Type") || "").startsWith("text/event-stream");
      if (response.ok && streamed) {
        const usage = await readStream(response, started);
        if (usage) {
          show("console-tokens", tokens(usage));
        }
      } else {
        const text = await response.text();
        show("console-ttfb", "—");
        let parsed = null;
        try {
          parsed = JSON.parse(text);
        } catch (error) {
          parsed = null;
        }
        if (response.ok && parsed) {
          answer.textContent = answerText(parsed);
          show("console-tokens", tokens(parsed.usage));
        } else {
          answer.textContent = parsed ? errorText(parsed, response.status) : (text || "HTTP " + response.status);
          answer.dataset.state = "error";
        }
      }
      show("console-latency", ms(performance.now() - started));
      form.dataset.state = "answered";
      await lookUp(answered);
    } catch (error) {
      answer.textContent = "The call failed: " + error;
      answer.dataset.state = "error";
      form.dataset.state = "failed";
    } finally {
      send.disabled = false;
    }
  });
})();
