// Minimal placeholder; the full page is built in the chat page issue.
document.getElementById("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = document.getElementById("message");
  const text = box.value.trim();
  if (!text) return;
  const log = document.getElementById("log");
  const add = (role, content) => {
    const p = document.createElement("p");
    p.dataset.role = role;
    p.textContent = content;
    log.append(p);
  };
  add("user", text);
  box.value = "";
  const body = { message: text };
  const stored = localStorage.getItem("sessionId");
  if (stored) body.sessionId = stored;
  const response = await fetch("/api/chat", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json();
  if (data.sessionId) localStorage.setItem("sessionId", data.sessionId);
  add("assistant", response.ok ? data.reply : data.error.message);
});
