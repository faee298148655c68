// Agent Mail web UI: keyboard navigation and live refresh. No framework, no inline script (strict CSP).
(function () {
  "use strict";
  var POLL_MS = 1500;

  // j/k move through the list, Enter opens, / searches, c composes.
  var selected = -1;
  function rows() { var list = document.querySelector("[data-nav]"); return list ? list.querySelectorAll(":scope > li:not(.empty)") : []; }
  function select(i) {
    var all = rows(); if (!all.length) return;
    selected = Math.max(0, Math.min(all.length - 1, i));
    all.forEach(function (row, n) { row.classList.toggle("sel", n === selected); });
    all[selected].scrollIntoView({ block: "nearest" });
  }
  function go(selector) { var link = document.querySelector(selector); if (link) location.href = link.href; }  // absent: not offered
  // A form being written: a field of a form that sends changed from what the page gave it (a To or
  // Subject typed counts, not only a body: `c` threw such a compose form away).
  function drafting() {
    return Array.from(document.querySelectorAll("form[method=post] textarea, form[method=post] input[type=text], form[method=post] input:not([type])"))
      .some(function (field) { return field.value !== field.defaultValue; });
  }
  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (event.ctrlKey || event.metaKey || event.altKey || tag === "input" || tag === "textarea" || tag === "select") return;
    if (event.key === "j") { select(selected + 1); event.preventDefault(); }
    else if (event.key === "k") { select(selected - 1); event.preventDefault(); }
    else if (event.key === "Enter" && selected >= 0 && tag !== "button" && tag !== "a") {  // a focused control does its own
      var link = rows()[selected] && rows()[selected].querySelector("a"); if (link) { link.click(); event.preventDefault(); }
    }
    else if (event.key === "/") {  // to the search page only when that loses no draft (a reply being written)
      var q = document.querySelector("input[type=search]"); if (q) q.focus(); else if (!drafting()) go("nav a[href$='/ui/search']");
      event.preventDefault();
    }
    else if (event.key === "c" && !drafting()) { go("nav a[href$='/ui/compose']"); }  // a draft is not thrown away
  });

  // Times come in UTC, saying so (pages.py _when): shown in the viewer's own zone, named (CET,
  // GMT+5:30), the title keeping the UTC time.
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function zoneName(at) {
    var zone = new Intl.DateTimeFormat([], { timeZoneName: "short" }).formatToParts(at)
      .filter(function (part) { return part.type === "timeZoneName"; })[0];
    return zone ? zone.value : "local";
  }
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (time) {
      var at = new Date(time.dateTime.replace(/(\.\d{3})\d+/, "$1"));  // microseconds: not every engine parses them
      if (isNaN(at)) return;
      var tz = document.createElement("small");
      tz.className = "tz";
      tz.textContent = zoneName(at);
      time.replaceChildren(two(at.getMonth() + 1) + "-" + two(at.getDate()) + " " + two(at.getHours()) + ":" + two(at.getMinutes()) + "\u00a0", tz);  // the zone joined to the time (_when)
    });
  }
  localTimes(document);

  // The search's "since" is a day as the viewer's zone has it, like every time shown (pages.py
  // _since): its label names the zone, and the form sends the zone's offset from UTC at that
  // day's midnight (tz=+05:30; daylight saving as it is then). Without scripts: UTC, as labelled.
  document.querySelectorAll("[data-zone-of]").forEach(function (tz) { tz.textContent = zoneName(new Date()); });
  function offset(at) {
    var minutes = -at.getTimezoneOffset(), sign = minutes < 0 ? "-" : "+";
    minutes = Math.abs(minutes);
    return sign + two(Math.floor(minutes / 60)) + ":" + two(minutes % 60);
  }
  document.addEventListener("submit", function (event) {
    var form = event.target, since = form.querySelector("input[type=date][name=since]");
    if (!since) return;
    var tz = form.querySelector("input[name=tz]"), day = since.value.split("-");
    if (day.length !== 3) { if (tz) tz.remove(); return; }
    if (!tz) {
      tz = document.createElement("input");
      tz.type = "hidden";
      tz.name = "tz";
      form.append(tz);
    }
    tz.value = offset(new Date(+day[0], day[1] - 1, +day[2]));
  });

  // Compose's To and Cc take names separated by commas, and a datalist suggests whole values:
  // each suggestion is the field as typed up to its last comma, then a name not in it yet.
  document.querySelectorAll("input[list][data-names]").forEach(function (field) {
    var list = field.list, names = list ? Array.from(list.options).map(function (option) { return option.value; }) : [];
    function suggest() {
      var cut = field.value.lastIndexOf(",") + 1, head = field.value.slice(0, cut), rest = field.value.slice(cut);
      var prefix = cut ? head + (rest ? rest.match(/^\s*/)[0] : " ") : "";  // as typed: "A,B" is suggested "A,BlueLake"
      var taken = head.split(",").map(function (name) { return name.trim(); });
      list.replaceChildren.apply(list, names.filter(function (name) { return taken.indexOf(name) < 0; }).map(function (name) {
        var option = document.createElement("option");
        option.value = prefix + name;
        return option;
      }));
    }
    if (list) { field.addEventListener("focus", suggest); field.addEventListener("input", suggest); }  // (To and Cc share the list)
  });

  // Dangerous buttons ask first.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (button && button.dataset.confirm && !window.confirm(button.dataset.confirm)) event.preventDefault();
  });

  // A form past what the server takes (data-max-bytes: MAX_BODY_BYTES, counted as the browser
  // encodes it, line breaks as CRLF) is not sent: the server would refuse it unread. The page says
  // so by the form, the draft staying as it is.
  document.addEventListener("submit", function (event) {
    var form = event.target, max = Number(form.dataset && form.dataset.maxBytes);
    if (!max || event.defaultPrevented) return;
    var size = new URLSearchParams(new FormData(form)).toString().replace(/(%0D)?%0A/g, "%0D%0A").length;
    var note = form.querySelector(".too-large");
    if (size <= max) { if (note) note.remove(); return; }
    event.preventDefault();
    if (!note) {
      note = document.createElement("p");
      note.className = "error too-large";
      note.setAttribute("role", "alert");
      form.querySelector(".row-opts").before(note);
    }
    note.textContent = "Too large to send: " + size + " bytes as a form, where the server takes " + max +
      ". Shorten the message (see the limit above it); what you wrote is kept.";
  });
  // The too-large page's link back to the form: the browser's Back, which keeps the draft.
  document.querySelectorAll("[data-history-back]").forEach(function (link) {
    link.addEventListener("click", function (event) { if (history.length > 1) { history.back(); event.preventDefault(); } });
  });

  // A message sent once the sign-in had ended comes back on the sign-in page (pages.py
  // sign_in_again), and is kept in this tab: the browser's Back leads to a sign-in page without
  // it, which gets it back from here. Any other page (signed in: the message shown as its form
  // again, or left) lets it go.
  var carried = document.querySelector("form.login fieldset.draft");
  try {
    if (!carried) sessionStorage.removeItem("unsent");
    else if (!carried.disabled) {
      var fields = {};
      carried.querySelectorAll("[name]").forEach(function (field) { fields[field.name] = field.value; });
      sessionStorage.setItem("unsent", JSON.stringify(fields));
    } else if (sessionStorage.getItem("unsent")) {
      var kept = JSON.parse(sessionStorage.getItem("unsent"));
      carried.querySelectorAll("[name]").forEach(function (field) { field.value = kept[field.name] || ""; });
      carried.disabled = carried.hidden = false;
    }
  } catch (e) {}  // no storage (blocked): the sign-in page that says the sign-in ended still carries it

  // The thread's digest (summarize_thread) arrives after the page: the page does not wait for it.
  // Its own page (/ui/digest, where the page's link leads without scripts) lends its .digest-body.
  function loadDigest() {
    var digest = document.querySelector("details.digest[data-src]");
    if (!digest || !window.fetch) return;
    var holder = digest.querySelector(".digest-body");
    if (holder.querySelector("noscript")) {  // the first load: its link for no scripts gives way to a wait
      var wait = document.createElement("p");
      wait.className = "empty";
      wait.textContent = "Loading…";
      holder.replaceChildren(wait);
    }
    fetch(digest.dataset.src, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.text() : null; }).then(function (html) {
      var fresh = html && new DOMParser().parseFromString(html, "text/html").querySelector(".digest-body");
      if (!fresh) return;
      holder.replaceChildren.apply(holder, Array.from(fresh.childNodes));
      localTimes(holder);  // it came after the page's times were made local
      // Each message asking for acks says who has yet to give one (the digest's open acks).
      // A link to a message on this page scrolls to it; others open the page holding theirs.
      var pending = {};
      digest.querySelectorAll("li[data-m]").forEach(function (item) {
        pending[item.dataset.m] = item.querySelector(".who").textContent;
        if (document.getElementById("m" + item.dataset.m)) item.querySelector("a").setAttribute("href", "#m" + item.dataset.m);
      });
      document.querySelectorAll("article.msg[data-ack] .ack-state").forEach(function (tag) {
        var who = pending[tag.closest("article").id.slice(1)];
        tag.textContent = who ? "awaiting ack: " + who : "acknowledged by all";
        tag.className = "tag ack-state " + (who ? "ack" : "done");
      });
    }).catch(function () {});
  }
  loadDigest();

  // Live: poll the page's scope (its newest message id, acknowledgement and, with unread marks, read); when it changes, fetch the page
  // again and swap its live regions (forms being typed into stay as they are).
  var body = document.body, url = body.dataset.live;
  if (!url || !window.fetch) return;
  var latest = body.dataset.latest || "", busy = false, failed = 0, timer, note = null, dot = document.querySelector(".live-dot");
  dot.hidden = false;
  // Not updating: the mark goes and the page says why (null: updating again). A sign-in that ended
  // (401) stops the polls; the server unreachable or failing, after FAILURES in a row, does not.
  var FAILURES = 3;
  function notUpdating(why, link) {
    dot.hidden = Boolean(why);
    if (!why) { if (note) note.remove(); note = null; return; }
    if (!note) {
      note = document.createElement("p");
      note.className = "notice live-off";
      note.setAttribute("role", "status");
      document.querySelector("main").prepend(note);
    }
    note.replaceChildren(why);
    if (link) {
      var again = document.createElement("a");
      again.href = location.href;  // the page itself: without a session it leads to the sign-in, then back here
      again.textContent = link;
      note.append(" ", again);
    }
  }
  function signedOut() {
    clearInterval(timer);
    notUpdating("This page is no longer updating: your sign-in has ended.", "Sign in again");
  }
  // What has the keyboard focus in a live region, found again in its fresh copy: a button by its
  // form's fields (the action and what it acts on), a link by its href.
  function focusKey(element) {
    if (element.form) {
      var fields = new URLSearchParams(new FormData(element.form));
      fields.delete("csrf");
      return "form:" + fields.toString();
    }
    return element.getAttribute("href") ? "a:" + element.getAttribute("href") : null;
  }
  function refocus(regions, key) {
    var all = [];
    regions.forEach(function (region) { all = all.concat(Array.from(region.querySelectorAll("button, a[href]"))); });
    var found = all.find(function (element) { return focusKey(element) === key; });
    if (found) found.focus({ preventScroll: true });
  }
  function refresh() {
    return fetch(location.href, { credentials: "same-origin" }).then(function (r) {
      if (r.redirected && /\/ui\/login$/.test(new URL(r.url).pathname)) return signedOut();  // (just after a poll)
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (html) {
      if (!html) return;
      var fresh = new DOMParser().parseFromString(html, "text/html");
      var now = document.querySelectorAll("[data-live-region]"), next = fresh.querySelectorAll("[data-live-region]");
      var was = selected >= 0 && rows()[selected] && rows()[selected].querySelector("a");  // the same message stays selected
      var href = was && was.getAttribute("href");
      var focused = document.activeElement, inside = Array.from(now).some(function (region) { return region.contains(focused); });
      var key = inside && focused !== document.body ? focusKey(focused) : null;  // swapped out below: found again after
      for (var i = 0; i < now.length && i < next.length; i++) now[i].replaceChildren.apply(now[i], Array.from(next[i].childNodes));
      // A form's fields that follow the page (a thread's reply: the message it answers, its To), as
      // long as the person has not changed them: what they typed stays.
      document.querySelectorAll("[data-live-field]").forEach(function (field) {
        var update = fresh.querySelector("[data-live-field][name='" + field.name + "']");
        if (update && field.value === field.defaultValue) field.value = field.defaultValue = update.defaultValue;
      });
      latest = (fresh.body && fresh.body.dataset.latest) || latest;
      localTimes(document);
      loadDigest();
      if (key) refocus(now, key);
      if (href) {
        var found = Array.from(rows()).findIndex(function (row) { var a = row.querySelector("a"); return a && a.getAttribute("href") === href; });
        select(found >= 0 ? found : selected);
      }
    });
  }
  function poll() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) return signedOut();
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json().then(function (data) {
          failed = 0;
          notUpdating(null);
          if (data.latest && data.latest !== latest) { latest = data.latest; return refresh(); }
        });
      })
      .catch(function () {
        if (++failed >= FAILURES) notUpdating("This page is not updating: the server does not answer. Trying again…");
      })
      .then(function () { busy = false; });
  }
  timer = setInterval(poll, POLL_MS);
})();
