// Talking to the explorer's JSON API. Every number the page shows comes from here.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function answer(response) {
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new ApiError(body.detail || `HTTP ${response.status}`, response.status);
  return body;
}

// Whether an image endpoint's error is about the input itself (convlens.server.uploads): not a
// picture convlens reads (415), too large (413), or a 400 naming the upload or the test index.
// Such an input has no prediction at all; any other error is about the request (a cell, a method).
function rejectsInput(error, input) {
  if (error.status === 413 || error.status === 415) return true;
  if (error.status !== 400) return false;
  return input.kind === "test" ? error.message.startsWith("test_index") : error.message.startsWith("upload ");
}

export async function getJSON(url) {
  return answer(await fetch(url));
}

export async function postJSON(url, value) {
  return answer(
    await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(value) })
  );
}

// An image endpoint: the current input (a drawn/uploaded blob or a test index, maybe inverted)
// plus form fields. Every answer says how far the input is from the training images ("shift");
// the input panel shows it (an "input-checked" event on document, whichever view asked), with
// the input the answer was computed for as `detail.request`: an answer for an older input is
// not shown as the current one.
export async function postImage(url, input, fields = {}) {
  const form = new FormData();
  if (input.kind === "test") form.append("test_index", String(input.index));
  else form.append("image", input.blob, input.name || "drawing.png");
  if (input.invert) form.append("invert", "true");
  for (const [key, value] of Object.entries(fields)) {
    if (value !== null && value !== undefined && value !== "") form.append(key, String(value));
  }
  let body;
  try {
    body = await answer(await fetch(url, { method: "POST", body: form }));
  } catch (error) {
    // the input panel forgets what it showed of the previous image ("input-rejected" on document)
    if (error instanceof ApiError && rejectsInput(error, input)) {
      document.dispatchEvent(new CustomEvent("input-rejected", { detail: { request: input, message: error.message } }));
    }
    throw error;
  }
  if ("shift" in body) document.dispatchEvent(new CustomEvent("input-checked", { detail: { ...body, request: input } }));
  return body;
}

// A packed float32 tensor {shape, b64} → {shape, data: Float32Array}.
export function unpack(packed) {
  const bytes = Uint8Array.from(atob(packed.b64), (c) => c.charCodeAt(0));
  return { shape: packed.shape, data: new Float32Array(bytes.buffer) };
}

// This page's own random id (letters, digits and -): the server keeps one training and one
// learning-playground network per page, and a new one from the same page replaces the old.
export const PAGE_ID = globalThis.crypto?.randomUUID?.() ??
  Array.from({ length: 24 }, () => Math.floor(Math.random() * 36).toString(36)).join("");
