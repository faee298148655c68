"""Mail between two projects in the web UI, through the real server (authentication off: the
loopback caller is the admin): WarmSwan of shop-web writes to QuickBear@srv-shop in thread
CART-12 (which srv-shop has too) and asks it for contact. A message is stored in its sender's
project: every link to it must open that project's thread."""

import html
import json
import re

import httpx
import pytest

from .servers import running_server

SHOP, WEB = "srv-shop", "srv-shop-web"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(url, an API client, {what: the message})."""
    database = tmp_path_factory.mktemp("webui-cross-project") / "agent_mail.db"
    with running_server(database) as url:
        api = httpx.Client(base_url=url, timeout=60)

        def call(tool: str, **arguments) -> dict:
            answer = api.post(f"/api/{tool}", json=arguments)
            assert answer.status_code == 200, answer.text
            return answer.json()

        for key in ("/srv/shop", "/srv/shop-web"):
            call("ensure_project", human_key=key)
        for project, name in ((SHOP, "QuickBear"), (SHOP, "MagentaHill"), (WEB, "WarmSwan")):
            call("register_agent", project_key=project, program="p", model="m", name=name)
            call("set_contact_policy", project_key=project, agent_name=name, policy="open")
        call("ensure_product", product_key="acme")
        for project in (SHOP, WEB):
            call("products_link", product_key="acme", project_key=project)
        sent = {
            "own": call("send_message", project_key=SHOP, sender_name="MagentaHill", to=["QuickBear"], thread_id="CART-12",
                        subject="Shop's own CART-12", body_md="the backend side", ack_required=True)["message"],
            "cross": call("send_message", project_key=WEB, sender_name="WarmSwan", to=[f"QuickBear@{SHOP}"], thread_id="CART-12",
                          subject="CART-12: new cart API", body_md="The cart moves.", ack_required=True)["message"],
        }
        call("set_contact_policy", project_key=SHOP, agent_name="QuickBear", policy="contacts_only")
        call("request_contact", project_key=WEB, from_agent="WarmSwan", to_agent=f"QuickBear@{SHOP}", reason="the cart API")
        [notice] = [m for m in call("fetch_inbox", project_key=SHOP, agent_name="QuickBear")["messages"] if m["kind"] == "notice"]
        sent["notice"] = notice
        yield url, api, sent


def links_to(page: str, message_id: str) -> list[str]:
    """Every link of the page to this message."""
    return [html.unescape(href) for href in re.findall(r'href="([^"]*[?&](?:amp;)?m=' + message_id + r'[&#"][^"]*)"', page)]


def opens(client: httpx.Client, link: str, message_id: str) -> bool:
    """Whether the link answers a thread page that shows the message."""
    page = client.get(link)
    return page.status_code == 200 and f'<article class="msg" id="m{message_id}"' in page.text


def test_every_link_to_another_projects_mail_opens_the_project_that_stores_it(site):
    """The agent and product pages linked QuickBear's mail from shop-web with shop's slug:
    shop's own CART-12 opened (without the message), and a contact request's notice answered
    404 "Thread … not found"."""
    url, api, sent = site
    client = httpx.Client(base_url=url, timeout=60)
    pages = {
        "agent": client.get("/ui/agent", params={"p": SHOP, "a": "QuickBear"}).text,
        "agent, ack pending": client.get("/ui/agent", params={"p": SHOP, "a": "QuickBear", "only": "acks"}).text,
        "product, as QuickBear": client.get("/ui/product", params={"k": "acme", "as": "QuickBear"}).text,
        "product": client.get("/ui/product", params={"k": "acme"}).text,
        "project's open acks": client.get("/ui/project", params={"p": SHOP}).text,
        "search": client.get("/ui/search", params={"q": "cart"}).text,
        "product search": client.get("/ui/product", params={"k": "acme", "q": "cart"}).text,
        "inbox": client.get("/").text,
    }
    for what, message in sent.items():
        for name, page in pages.items():
            if what == "notice" and name in ("agent, ack pending", "project's open acks"):
                continue  # it asks for no acknowledgement
            links = links_to(page, message["id"])
            assert links, (what, name)
            assert all(opens(client, link, message["id"]) for link in links), (what, name, links)
    as_quickbear = pages["product, as QuickBear"]
    row = re.search(rf'<li id="received-{sent["cross"]["id"]}".*?</li>', as_quickbear, re.S).group()
    assert f'<span class="proj">{WEB}</span> · <bdi>CART-12</bdi>' in row  # where it is, as the link says
    assert f'name="project_key" value="{SHOP}"' in row  # acknowledged as QuickBear, in its own project


def test_a_digest_names_another_projects_recipient_with_its_project(site):
    """It said "QuickBear", as if of shop-web, where the message itself says QuickBear@srv-shop."""
    url, api, sent = site
    client = httpx.Client(base_url=url, timeout=60)
    page = client.get("/ui/thread", params={"p": WEB, "t": "CART-12"}).text
    assert f"→ QuickBear@{SHOP}" in page  # the message's own header

    def awaited(project: str, message: dict) -> list[str]:
        digest = client.get("/ui/digest", params={"p": project, "t": "CART-12"}).text
        return re.findall(rf'<li data-m="{message["id"]}">.*?<span class="who">([^<]*)</span>', digest)

    assert awaited(WEB, sent["cross"]) == [f"QuickBear@{SHOP}"]
    assert awaited(SHOP, sent["own"]) == ["QuickBear"]  # its own project's, bare


def test_a_reply_from_a_thread_page_goes_to_its_participants_of_other_projects_too(site):
    """The reply form's To left out QuickBear@srv-shop: the overseer's answer reached WarmSwan only."""
    url, api, sent = site
    client = httpx.Client(base_url=url, timeout=60)
    page = client.get("/ui/thread", params={"p": WEB, "t": "CART-12"}).text
    form = page[page.index('class="compose reply"'):]
    fields = {name: html.unescape(value) for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form)}
    to = html.unescape(re.search(r'<input name="to" required value="([^"]*)"', form).group(1))
    assert to == f"WarmSwan, QuickBear@{SHOP}"
    answered = client.post("/ui/compose", data={**fields, "to": to, "body_md": "Ship it."})
    assert answered.status_code == 303, answered.text
    inbox = api.post("/api/fetch_inbox", json={"project_key": SHOP, "agent_name": "QuickBear"}).json()["messages"]
    assert (inbox[0]["sender"], inbox[0]["subject"], inbox[0]["thread_id"]) == (f"Overseer@{WEB}", "Re: CART-12: new cart API", "CART-12")


def test_a_reply_form_leaves_out_participants_beyond_a_scoped_credential(tmp_path):
    """An admin credential of shop-web alone reads its CART-12; QuickBear@srv-shop is beyond it,
    so the form does not offer it (asking about it was a 403 for the whole page)."""
    admin, web_admin = "admin-token-0123456789", "web-admin-token-0123456789"
    tokens = json.dumps([admin, {"token": web_admin, "projects": [WEB], "role": "admin"}])
    with running_server(tmp_path / "agent_mail.db", AUTH_MODE="bearer", AUTH_BEARER_TOKENS=tokens) as url:
        api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {admin}"})
        for key in ("/srv/shop", "/srv/shop-web"):
            api.post("/api/ensure_project", json={"human_key": key}).raise_for_status()
        agents = {name: api.post("/api/register_agent", json={"project_key": project, "program": "p", "model": "m", "name": name}
                                 ).json()["registration_token"] for project, name in ((SHOP, "QuickBear"), (WEB, "WarmSwan"))}
        api.post("/api/set_contact_policy", json={"project_key": SHOP, "agent_name": "QuickBear", "policy": "open",
                                                  "registration_token": agents["QuickBear"]}).raise_for_status()
        api.post("/api/send_message", json={"project_key": WEB, "sender_name": "WarmSwan", "sender_token": agents["WarmSwan"],
                                            "to": [f"QuickBear@{SHOP}"], "thread_id": "CART-12", "subject": "CART-12",
                                            "body_md": "x"}).raise_for_status()
        client = httpx.Client(base_url=url, timeout=60)
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text).group(1)
        assert client.post("/ui/login", data={"csrf": csrf, "token": web_admin, "next": "/"}).status_code == 303
        page = client.get("/ui/thread", params={"p": WEB, "t": "CART-12"})
        assert page.status_code == 200 and '<input name="to" required value="WarmSwan"' in page.text
