// Sortable leaderboard tables (plain JS, no dependencies) and a self-test for headless browsers:
// open index.html?selftest and the page clicks every sortable header twice, then writes the row
// orders and each image's naturalWidth as JSON into <pre id="selftest">.
(function () {
  "use strict";

  function cellValue(row, idx, type) {
    var cell = row.cells[idx];
    var v = cell.getAttribute("data-v");
    if (type === "num") {
      var x = parseFloat(v);
      return isNaN(x) ? null : x;
    }
    return (v !== null ? v : cell.textContent).toLowerCase();
  }

  function sortTable(table, idx, dir) {
    var headers = table.tHead.rows[0].cells;
    var type = headers[idx].getAttribute("data-type");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var sign = dir === "ascending" ? 1 : -1;
    rows.sort(function (a, b) {
      var x = cellValue(a, idx, type);
      var y = cellValue(b, idx, type);
      if (x === y) return 0;
      if (x === null) return 1; // missing values last in either direction
      if (y === null) return -1;
      return x < y ? -sign : sign;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(headers, function (c) { c.removeAttribute("aria-sort"); });
    headers[idx].setAttribute("aria-sort", dir);
  }

  function toggle(th) {
    var current = th.getAttribute("aria-sort");
    var dir = current ? (current === "ascending" ? "descending" : "ascending") : th.getAttribute("data-first") || "descending";
    sortTable(th.closest("table"), th.cellIndex, dir);
  }

  document.querySelectorAll("table.board th[data-type]").forEach(function (th) {
    th.tabIndex = 0;
    th.addEventListener("click", function () { toggle(th); });
    th.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); toggle(th); }
    });
  });

  function order(table) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.getAttribute("data-entry"); });
  }

  if (/[?&]selftest\b/.test(window.location.search)) {
    window.addEventListener("load", function () {
      var out = { tables: [], images: [] };
      document.querySelectorAll("table.board").forEach(function (table) {
        var rec = { protocol: table.getAttribute("data-protocol"), initial: order(table), clicks: {} };
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
          if (!th.hasAttribute("data-type")) return;
          th.click();
          var first = order(table);
          th.click();
          rec.clicks[th.getAttribute("data-key")] = [first, order(table)];
        });
        out.tables.push(rec);
      });
      document.querySelectorAll("img").forEach(function (img) {
        out.images.push({ src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth });
      });
      var pre = document.getElementById("selftest");
      pre.textContent = JSON.stringify(out);
      pre.setAttribute("data-done", "1");
    });
  }
})();
