// certmq console: small enhancements. Every page works without this script.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Copy buttons: data-copy names the element whose text is copied.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      const text = source.textContent;
      let copied = false;
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch (error) {
        // Pages served over plain http to another host have no clipboard API: select the text.
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        copied = document.execCommand && document.execCommand("copy");
      }
      const label = button.textContent;
      button.textContent = copied ? "Copied" : "Press Ctrl+C";
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  }

  // A chosen PEM file is shown in the text area next to it, so the operator sees what is sent.
  for (const input of document.querySelectorAll("input[type=file][data-fills]")) {
    input.addEventListener("change", async () => {
      const target = document.getElementById(input.dataset.fills);
      const file = input.files && input.files[0];
      if (!target || !file) return;
      if (file.size > 256 * 1024) return;
      const text = await file.text();
      if (text.includes("-----BEGIN")) target.value = text;
    });
  }

  // Optional auto-refresh of a page (connections), remembered in this browser.
  const refresh = document.querySelector("input[data-auto-refresh]");
  if (refresh) {
    const key = "certmq.autoRefresh." + location.pathname;
    const seconds = Number(refresh.dataset.autoRefresh) || 5;
    let timer = null;
    const apply = () => {
      clearInterval(timer);
      if (refresh.checked) timer = setInterval(() => location.reload(), seconds * 1000);
    };
    refresh.checked = localStorage.getItem(key) === "on";
    refresh.addEventListener("change", () => {
      localStorage.setItem(key, refresh.checked ? "on" : "off");
      apply();
    });
    apply();
  }
});
