// Talking to the explorer's JSON API. Every number the page shows comes from here.

export class ApiError extends Error {}

async function answer(response) {
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new ApiError(body.detail || `HTTP ${response.status}`);
  return body;
}

export async function getJSON(url) {
  return answer(await fetch(url));
}

export async function postJSON(url, value) {
  return answer(
    await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(value) })
  );
}

// An image endpoint: the current input (a drawn/uploaded blob or a test index) plus form fields.
export async function postImage(url, input, fields = {}) {
  const form = new FormData();
  if (input.kind === "test") form.append("test_index", String(input.index));
  else form.append("image", input.blob, input.name || "drawing.png");
  for (const [key, value] of Object.entries(fields)) {
    if (value !== null && value !== undefined && value !== "") form.append(key, String(value));
  }
  return answer(await fetch(url, { method: "POST", body: form }));
}

// A packed float32 tensor {shape, b64} → {shape, data: Float32Array}.
export function unpack(packed) {
  const bytes = Uint8Array.from(atob(packed.b64), (c) => c.charCodeAt(0));
  return { shape: packed.shape, data: new Float32Array(bytes.buffer) };
}
