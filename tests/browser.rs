//! The real-browser suite: two users, each in their own headless Chromium (separate
//! WebDriver sessions and profiles), walk the log-in/sign-up story (step 2) and the home
//! page story (step 3) against an in-process server. A second story puts the two
//! transports side by side — one user polling the HTTP API (`?transport=polling`), the
//! other on the WebSocket — and then shrinks the WebSocket user's window to a phone's.
//! Three more (step 6) edit and delete messages: live over the WebSocket and after a
//! reload, to a polling page, and to a page that was away for more than one `joined` can
//! carry. Two more follow the read markers: a room's unread badge (the server's count,
//! kept live) and the "New messages" line when the room is opened; and one account in two
//! browsers, where reading in one clears the badge in the other, also after a reload. Step 9
//! adds a direct message (listed apart, with its unread badge), a private room that only its
//! members find and open (members panel; a removed member loses it at once), and a mention
//! in another room (mention badge, highlight, `@` autocomplete, one notification while the
//! tab is hidden), a message search (a URL and an id found, marked, the room opened), and a
//! thread reply with reactions. The tests take turns (one pair of browsers at a time).
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the suite is skipped with a
//! loud notice — except in CI (`CI=true`), where it is mandatory and fails instead.
//! Screenshots land in tests/artifacts/ (git-ignored).
//!
//! Every wait polls the page for a condition with a deadline; nothing sleeps a fixed time.

mod browser_support;
mod common;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use browser_support::{Browser, Driver, Programs, STEP};
use chatroom::{Config, RunningServer};
use fantoccini::key::Key;
use futures::FutureExt;
use serde_json::{Value, json};

/// "Each sees the other's message within a second."
const LIVE: Duration = Duration::from_secs(1);
/// A guard against a hung browser: the walk normally takes well under 30 s.
const SUITE_LIMIT: Duration = Duration::from_secs(120);
const ROOM: &str = "party-chat";
const XSS: &str = "<img src=x onerror=alert(1)>";
const ALICE_PASSWORD: &str = "alice-Secret-1";
const BOB_PASSWORD: &str = "bob-Secret-22";

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("artifacts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_in_chromium_walk_sign_up_log_in_rooms_and_chat() {
    with_two_browsers(["alice", "bob"], SUITE_LIMIT, async |alice, bob| {
        walk(alice, bob).await
    })
    .await;
}

/// Starts a server with a fresh data directory, chromedriver and one Chromium per user
/// (`names` are also the users' names), runs `story` with them within `limit`, and tears
/// everything down. On failure each browser's screen is saved as failure-<name>.png.
/// Skipped (loudly) without Chromium, unless in CI.
async fn with_two_browsers(
    names: [&'static str; 2],
    limit: Duration,
    story: impl AsyncFnOnce(&Browser, &Browser),
) {
    with_two_browsers_on(|_| {}, names, limit, story).await;
}

/// [`with_two_browsers`] on a server whose settings `configure` changes first.
async fn with_two_browsers_on(
    configure: impl FnOnce(&mut Config),
    names: [&'static str; 2],
    limit: Duration,
    story: impl AsyncFnOnce(&Browser, &Browser),
) {
    let Some(programs) = Programs::or_skip() else {
        return;
    };
    let _machine = browser_support::one_at_a_time().await;
    let started = Instant::now();
    let data = tempfile::tempdir().expect("data dir");
    let mut config = Config::for_data_dir(data.path());
    configure(&mut config);
    let server = RunningServer::start(config).await.expect("server starts");
    let base = format!("http://{}", server.addr);
    let driver = Driver::spawn(&programs.chromedriver);
    let (first, second) = tokio::join!(
        Browser::open(&driver, &programs.chromium, &base, names[0]),
        Browser::open(&driver, &programs.chromium, &base, names[1]),
    );

    let outcome = AssertUnwindSafe(async {
        if tokio::time::timeout(limit, story(&first, &second))
            .await
            .is_err()
        {
            panic!("the browser story did not finish within {limit:?}");
        }
    })
    .catch_unwind()
    .await;
    if outcome.is_err() {
        // What each browser showed when it failed, for the post-mortem.
        for browser in [&first, &second] {
            let file = artifacts().join(format!("failure-{}.png", browser.name));
            if let Ok(png) = browser.client.screenshot().await {
                let _ = std::fs::create_dir_all(artifacts());
                let _ = std::fs::write(&file, png);
                eprintln!(
                    "screenshot of {} at failure: {}",
                    browser.name,
                    file.display()
                );
            }
        }
    }
    first.close().await;
    second.close().await;
    drop(driver);
    server.stop().await.expect("server stops cleanly");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    eprintln!(
        "browser story of {} and {} passed in {:.1?}",
        names[0],
        names[1],
        started.elapsed()
    );
}

async fn walk(alice: &Browser, bob: &Browser) {
    landing_buttons_swap_with_their_forms(alice).await;
    sign_up_log_out_log_in_and_reopen(alice).await;
    create_a_room(alice).await;
    guest_entry(bob).await;
    second_user_signs_up_searches_and_subscribes(bob).await;
    exchange_messages(alice, bob).await;
    unread_count(alice, bob).await;
    markup_is_shown_as_text(alice, bob).await;
    alice.screenshot(&artifacts().join("home.png")).await;
    bob.screenshot(&artifacts().join("home-second-user.png"))
        .await;
    unsubscribe(alice, bob).await;
}

// ---- step 2: the landing page and accounts -------------------------------------------------

/// Which parts of the landing page show: "login-button,signup-button,login-form,signup-form,guest-form".
const LANDING_STATE: &str = "
    const shown = (s) => { const e = document.querySelector(s); return !!e && !e.hidden && e.getClientRects().length > 0; };
    return ['#show-login', '#show-signup', '#login-form', '#signup-form', '#guest-form'].map(shown).join(',');";

async fn expect_landing(b: &Browser, what: &str, expected: &str) {
    b.wait_js(
        &format!("the landing page shows {what} ({expected})"),
        STEP,
        &format!("return (function () {{ {LANDING_STATE} }})() === arguments[0];"),
        vec![json!(expected)],
    )
    .await;
}

async fn landing_buttons_swap_with_their_forms(a: &Browser) {
    a.goto("/").await;
    a.wait_at("/").await;
    expect_landing(a, "the two buttons", "true,true,false,false,true").await;
    let hidden = a.js("return [document.getElementById('show-login').hidden, document.getElementById('show-signup').hidden]", vec![]).await;
    assert_eq!(hidden, json!([false, false]));
    a.screenshot(&artifacts().join("landing.png")).await;

    for (button, form, shown) in [
        ("#show-login", "#login-form", "false,false,true,false,true"),
        (
            "#show-signup",
            "#signup-form",
            "false,false,false,true,true",
        ),
    ] {
        a.click(button).await;
        expect_landing(a, &format!("{form} instead of the buttons"), shown).await;
        if form == "#signup-form" {
            a.screenshot(&artifacts().join("landing-signup.png")).await;
        }
        let hidden = a.js("return [document.getElementById('show-login').hidden, document.getElementById('show-signup').hidden]", vec![]).await;
        assert_eq!(
            hidden,
            json!([true, true]),
            "{button} hides both buttons (the `hidden` attribute)"
        );
        let focused = a.js("return document.activeElement.closest('form')?.id + '/' + document.activeElement.name", vec![]).await;
        assert_eq!(
            focused,
            json!(format!("{}/username", &form[1..])),
            "{form}'s username field gets the focus"
        );
        a.click(&format!("{form} button.cancel")).await;
        expect_landing(
            a,
            "the two buttons again after Cancel",
            "true,true,false,false,true",
        )
        .await;
    }
}

async fn fill(b: &Browser, form: &str, username: &str, password: &str) {
    b.clear(&format!("{form} input[name=username]")).await;
    b.type_into(&format!("{form} input[name=username]"), username)
        .await;
    b.clear(&format!("{form} input[name=password]")).await;
    b.type_into(&format!("{form} input[name=password]"), password)
        .await;
}

async fn expect_form_error(b: &Browser, form: &str, what: &str) -> String {
    let error = b
        .wait_js(
            &format!("{form} shows an error ({what})"),
            STEP,
            "const e = document.querySelector(arguments[0] + ' .form-error'); return e && e.textContent.trim();",
            vec![json!(form)],
        )
        .await;
    assert!(
        b.is_visible(&format!("{form} .form-error")).await,
        "the error next to {form} is visible"
    );
    error.as_str().unwrap_or_default().to_owned()
}

async fn expect_home_as(b: &Browser, user: &str) {
    b.wait_at("/home").await;
    b.wait_js(
        &format!("#whoami shows {user}"),
        STEP,
        "return document.getElementById('whoami').textContent === arguments[0]",
        vec![json!(user)],
    )
    .await;
    b.wait_js(
        "the live connection is up",
        STEP,
        "return document.getElementById('conn-state').dataset.state === 'connected'",
        vec![],
    )
    .await;
}

async fn log_out(b: &Browser) {
    b.click("#logout").await;
    b.wait_at("/").await;
    expect_landing(
        b,
        "the two buttons after logging out",
        "true,true,false,false,true",
    )
    .await;
}

async fn sign_up_log_out_log_in_and_reopen(a: &Browser) {
    // Sign up: a weak password is refused next to the form, then the account is created.
    a.click("#show-signup").await;
    fill(a, "#signup-form", "alice", "short").await;
    a.click("#signup-form button[type=submit]").await;
    let error = expect_form_error(a, "#signup-form", "password too short").await;
    assert!(
        error.to_lowercase().contains("password"),
        "weak-password error names the password: {error:?}"
    );
    assert_eq!(a.location().await, "/");
    fill(a, "#signup-form", "alice", ALICE_PASSWORD).await;
    a.click("#signup-form button[type=submit]").await;
    expect_home_as(a, "alice").await;

    // Log out: back on the landing page, and /home no longer opens.
    log_out(a).await;
    a.goto("/home").await;
    a.wait_at("/").await;

    // Log in: a wrong password is refused next to the form; the right one lands on /home.
    a.click("#show-login").await;
    fill(a, "#login-form", "alice", "not-the-password").await;
    a.click("#login-form button[type=submit]").await;
    expect_form_error(a, "#login-form", "wrong password").await;
    assert_eq!(a.location().await, "/");
    fill(a, "#login-form", "alice", ALICE_PASSWORD).await;
    a.click("#login-form button[type=submit]").await;
    expect_home_as(a, "alice").await;

    // Close the tab and open the site again: the session is live, so / goes to /home.
    let old = a.client.window().await.expect("window handle");
    let fresh = a.client.new_window(true).await.expect("new tab");
    a.client
        .switch_to_window(old)
        .await
        .expect("switch to old tab");
    a.client.close_window().await.expect("close old tab");
    a.client
        .switch_to_window(fresh.handle)
        .await
        .expect("switch to new tab");
    a.goto("/").await;
    expect_home_as(a, "alice").await;
}

// ---- step 3: the home page -----------------------------------------------------------------

/// The rooms in #room-list, in order.
async fn room_list(b: &Browser) -> Value {
    b.js("return [...document.querySelectorAll('#room-list > li.room-item button.open-room')].map(e => e.dataset.room)", vec![])
        .await
}

async fn expect_open_room(b: &Browser, room: &str) {
    b.wait_js(
        &format!("{room} is open and its history loaded"),
        STEP,
        "return document.getElementById('room-title').textContent === arguments[0]
            && document.getElementById('history-status').textContent !== 'Loading messages…'
            && !document.getElementById('message-input').disabled",
        vec![json!(room)],
    )
    .await;
}

async fn expect_in_list(b: &Browser, room: &str, present: bool) {
    b.wait_js(
        &format!("{room} is {}in #room-list", if present { "" } else { "not " }),
        STEP,
        "return [...document.querySelectorAll('#room-list button.open-room')].some(e => e.dataset.room === arguments[0]) === arguments[1]",
        vec![json!(room), json!(present)],
    )
    .await;
}

async fn create_a_room(a: &Browser) {
    assert!(
        !a.is_visible("#new-room-form").await,
        "the new-room form starts hidden"
    );
    a.click("#new-room").await;
    a.wait_js("the + form opens with the focus in its field", STEP,
        "return !document.getElementById('new-room-form').hidden && document.activeElement.id === 'new-room-name'", vec![]).await;
    // A name that breaks the rules of step 1 is refused next to the form.
    a.type_into("#new-room-name", &format!("Party Chat!{}", Key::Enter))
        .await;
    expect_form_error(a, "#new-room-form", "invalid room name").await;
    a.clear("#new-room-name").await;
    a.type_into("#new-room-name", &format!("{ROOM}{}", Key::Enter))
        .await;
    expect_in_list(a, ROOM, true).await;
    expect_open_room(a, ROOM).await;
    assert!(
        !a.is_visible("#new-room-form").await,
        "the + form closes after creating"
    );
    assert!(
        !a.is_visible("#subscribe").await,
        "a room made with + is subscribed already"
    );
    assert_eq!(
        room_list(a).await,
        json!(["general", ROOM]),
        "new accounts start in general"
    );
}

/// "Just pick a name" stays: a guest comes in with a room (made on the way in), and
/// `?room=` leaves the address.
async fn guest_entry(b: &Browser) {
    b.goto("/").await;
    b.wait_at("/").await;
    b.type_into("#guest-form input[name=username]", "carol")
        .await;
    b.type_into("#guest-form input[name=room]", "lobby").await;
    b.click("#guest-form button[type=submit]").await;
    expect_home_as(b, "carol").await; // waits for exactly "/home": the ?room= was removed
    assert_eq!(
        b.js(
            "return document.getElementById('whoami').dataset.guest",
            vec![]
        )
        .await,
        json!("true")
    );
    expect_open_room(b, "lobby").await;
    expect_in_list(b, "lobby", true).await;
    log_out(b).await;
}

async fn second_user_signs_up_searches_and_subscribes(b: &Browser) {
    // A taken name is refused next to the form.
    b.click("#show-signup").await;
    fill(b, "#signup-form", "Alice", BOB_PASSWORD).await;
    b.click("#signup-form button[type=submit]").await;
    expect_form_error(b, "#signup-form", "name taken").await;
    fill(b, "#signup-form", "bob", BOB_PASSWORD).await;
    b.click("#signup-form button[type=submit]").await;
    expect_home_as(b, "bob").await;
    expect_in_list(b, "general", true).await;
    assert_eq!(
        room_list(b).await,
        json!(["general"]),
        "a new account starts in general only"
    );
    expect_open_room(b, "general").await;

    // + with an existing room's name (the guest's) subscribes to it.
    b.click("#new-room").await;
    b.type_into("#new-room-name", &format!("lobby{}", Key::Enter))
        .await;
    expect_in_list(b, "lobby", true).await;
    expect_open_room(b, "lobby").await;

    // Search: suggestions appear while typing; choosing one opens it and offers Subscribe.
    b.type_into("#room-search", "party").await;
    let option = format!("#search-results li[role=option][data-room=\"{ROOM}\"]");
    b.wait_js(
        "the search suggests the room",
        STEP,
        browser_support::VISIBLE,
        vec![json!(option)],
    )
    .await;
    assert_eq!(
        b.js(
            "return document.getElementById('room-search').getAttribute('aria-expanded')",
            vec![]
        )
        .await,
        json!("true")
    );
    b.click(&option).await;
    expect_open_room(b, ROOM).await;
    assert!(
        !b.is_visible("#search-results").await,
        "the suggestions close after choosing"
    );
    assert!(
        b.is_visible("#subscribe").await,
        "an unsubscribed room offers Subscribe"
    );
    expect_in_list(b, ROOM, false).await;
    b.click("#subscribe").await;
    expect_in_list(b, ROOM, true).await;
    b.wait_js(
        "Subscribe goes away",
        STEP,
        "return document.getElementById('subscribe').hidden",
        vec![],
    )
    .await;
    assert_eq!(room_list(b).await, json!(["general", "lobby", ROOM]));
}

/// Script: the messages in #messages as [class, user, text] (only stored ones: with an id;
/// not deleted ones).
const FEED: &str =
    "return [...document.querySelectorAll('#messages div.message[data-id]:not(.deleted)')].map(m => [
    m.classList.contains('mine') ? 'mine' : m.classList.contains('theirs') ? 'theirs' : '?',
    m.querySelector('.meta > bdi.user').textContent,
    m.querySelector('div.text').textContent]);";

/// Waits until `b` shows `text` by `user` on the `side` ("mine"/"theirs"), exactly once.
async fn expect_message(
    b: &Browser,
    side: &str,
    user: &str,
    text: &str,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    b.wait_js(
        &format!("{user}'s message {text:?} shows as .{side}"),
        within,
        &format!("const feed = (function () {{ {FEED} }})();
            return feed.filter(([side, user, text]) => side === arguments[0] && user === arguments[1] && text === arguments[2]).length === 1;"),
        vec![json!(side), json!(user), json!(text)],
    )
    .await;
    let took = started.elapsed();
    let feed = b.js(FEED, vec![]).await;
    let copies = feed
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m[2] == json!(text))
        .count();
    assert_eq!(
        copies, 1,
        "[{}] {text:?} shows once, on the {side} side: {feed}",
        b.name
    );
    took
}

/// Types `text` and presses Enter; returns when the keys were sent.
async fn send(b: &Browser, text: &str) -> Instant {
    let started = Instant::now();
    b.type_into("#message-input", &format!("{text}{}", Key::Enter))
        .await;
    started
}

/// What is left of the one second since `sent`.
fn left_of_live(sent: Instant) -> Duration {
    LIVE.saturating_sub(sent.elapsed())
}

/// The receiver sees the message as `.theirs` within a second of the send (the deadline
/// counts from before the key press), and the sender sees it as `.mine`, stored.
async fn expect_delivered(from: &Browser, to: &Browser, text: &str, sent: Instant) {
    expect_message(to, "theirs", from.name, text, left_of_live(sent)).await;
    let took = sent.elapsed();
    expect_message(from, "mine", from.name, text, left_of_live(sent)).await;
    eprintln!("  {text:?}: {} → {} in {took:.0?}", from.name, to.name);
}

async fn exchange_messages(a: &Browser, b: &Browser) {
    expect_open_room(a, ROOM).await;
    expect_open_room(b, ROOM).await;

    // Enter sends.
    let text = "Hello Bob, welcome to the party!";
    let sent = send(a, text).await;
    expect_delivered(a, b, text, sent).await;
    assert_eq!(
        a.js(
            "return document.getElementById('message-input').value",
            vec![]
        )
        .await,
        json!(""),
        "the input is cleared"
    );

    // The Send button sends too.
    let text = "Thanks Alice — glad to be here.";
    b.type_into("#message-input", text).await;
    let sent = Instant::now();
    b.click("#composer button[type=submit]").await;
    expect_delivered(b, a, text, sent).await;

    // Shift+Enter adds a new line instead of sending.
    let before = b.js(FEED, vec![]).await.as_array().unwrap().len();
    b.type_into(
        "#message-input",
        &format!("line one{}{}{}line two", Key::Shift, Key::Enter, Key::Null),
    )
    .await;
    assert_eq!(
        b.js(
            "return document.getElementById('message-input').value",
            vec![]
        )
        .await,
        json!("line one\nline two")
    );
    assert_eq!(
        b.js(
            "return document.querySelectorAll('#messages div.message').length",
            vec![]
        )
        .await,
        json!(before),
        "Shift+Enter sent nothing"
    );
    let sent = send(b, "").await;
    expect_delivered(b, a, "line one\nline two", sent).await;
    let lines = a.js("return [...document.querySelectorAll('#messages div.message.theirs div.text')].pop().getClientRects()[0].height", vec![]).await;
    let one_line = a.js("return document.querySelector('#messages div.message div.text').getClientRects()[0].height", vec![]).await;
    assert!(
        lines.as_f64().unwrap() > one_line.as_f64().unwrap() * 1.5,
        "the new line shows as a line break ({lines} vs {one_line} px)"
    );
}

async fn unread_badge(b: &Browser, room: &str) -> Value {
    b.js(
        "const e = document.querySelector(`#room-list button.open-room[data-room=\"${arguments[0]}\"] span.unread`);
         return e && [e.hidden || e.getClientRects().length === 0 ? 'hidden' : 'shown', e.textContent];",
        vec![json!(room)],
    )
    .await
}

async fn unread_count(a: &Browser, b: &Browser) {
    assert_eq!(
        unread_badge(b, ROOM).await,
        json!(["hidden", "0"]),
        "no unread badge while the room is open"
    );
    b.click("#room-list button.open-room[data-room=\"general\"]")
        .await;
    expect_open_room(b, "general").await;

    let text = "Are you still there, Bob?";
    let sent = send(a, text).await;
    expect_message(a, "mine", "alice", text, left_of_live(sent)).await;
    b.wait_js(
        "the unread badge of the room shows 1",
        left_of_live(sent),
        "const e = document.querySelector(`#room-list button.open-room[data-room=\"${arguments[0]}\"] span.unread`);
         return !!e && !e.hidden && e.getClientRects().length > 0 && e.textContent === '1';",
        vec![json!(ROOM)],
    )
    .await;
    eprintln!(
        "  unread badge on bob's side {:.0?} after the send",
        sent.elapsed()
    );
    assert!(
        b.text("#messages").await.find(text).is_none(),
        "the message does not show in another room's feed"
    );
    assert_eq!(unread_badge(b, "general").await, json!(["hidden", "0"]));
    assert!(
        b.js("return document.title", vec![])
            .await
            .as_str()
            .unwrap()
            .starts_with("(1)"),
        "the tab title counts unread"
    );

    b.click(&format!(
        "#room-list button.open-room[data-room=\"{ROOM}\"]"
    ))
    .await;
    expect_open_room(b, ROOM).await;
    b.wait_js(
        "opening the room clears its unread badge",
        STEP,
        "const e = document.querySelector(`#room-list button.open-room[data-room=\"${arguments[0]}\"] span.unread`);
         return e.hidden && e.getClientRects().length === 0;",
        vec![json!(ROOM)],
    )
    .await;
    expect_message(b, "theirs", "alice", text, STEP).await;
}

async fn markup_is_shown_as_text(a: &Browser, b: &Browser) {
    let sent = send(a, XSS).await;
    expect_delivered(a, b, XSS, sent).await;
    for browser in [a, b] {
        let images = browser
            .js(
                "return document.querySelectorAll('#messages img').length",
                vec![],
            )
            .await;
        assert_eq!(
            images,
            json!(0),
            "[{}] no <img> was made from the message",
            browser.name
        );
        let last = browser.js("return [...document.querySelectorAll('#messages div.message div.text')].pop().textContent", vec![]).await;
        assert_eq!(
            last,
            json!(XSS),
            "[{}] the markup shows literally",
            browser.name
        );
        match browser.client.get_alert_text().await {
            Err(e) if e.is_no_such_alert() => {}
            Err(e) => panic!("[{}] expected 'no such alert', got: {e}", browser.name),
            Ok(text) => panic!("[{}] the message opened an alert: {text:?}", browser.name),
        }
    }
}

async fn subscriptions(b: &Browser) -> Value {
    b.js_async(
        "fetch('/api/subscriptions', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
            .then(r => r.ok ? r.json() : Promise.reject(new Error('HTTP ' + r.status)))
            .then(rooms => done(rooms.map(r => r.name).sort()), e => done('failed: ' + e.message));",
        vec![],
    )
    .await
}

async fn unsubscribe(a: &Browser, b: &Browser) {
    assert_eq!(subscriptions(b).await, json!(["general", "lobby", ROOM]));
    b.click(&format!(
        "#room-list li.room-item:has(button.open-room[data-room=\"{ROOM}\"]) button.unsubscribe"
    ))
    .await;
    expect_in_list(b, ROOM, false).await;
    assert_eq!(
        subscriptions(b).await,
        json!(["general", "lobby"]),
        "the server forgot the subscription"
    );
    assert_eq!(
        subscriptions(a).await,
        json!(["general", ROOM]),
        "the other user's subscription is untouched"
    );

    // After a reload the list comes from the server: still without the room.
    b.client.refresh().await.expect("reload");
    expect_home_as(b, "bob").await;
    expect_in_list(b, "general", true).await;
    assert_eq!(room_list(b).await, json!(["general", "lobby"]));
}

// ---- before/after: HTTP polling beside the WebSocket, then a phone's width ---------------

/// The polling user ("before": the HTTP API asked every 2 s) and the WebSocket user ("after").
const POLLER: &str = "polly";
const SOCKET_USER: &str = "webb";
const SIDE_ROOM: &str = "side-by-side";
/// A polling page asks for the open room every 2 s: a message shows within one poll.
const POLLED: Duration = Duration::from_secs(5);
/// The whole story normally takes about 10 s; this only guards against a hung browser.
const SIDE_BY_SIDE_LIMIT: Duration = Duration::from_secs(60);
/// An iPhone 12–15's viewport in CSS pixels.
const PHONE: (u32, u32) = (390, 844);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_beside_websocket_then_phone_width() {
    with_two_browsers(
        [POLLER, SOCKET_USER],
        SIDE_BY_SIDE_LIMIT,
        async |poller, socket| {
            let started = Instant::now();
            polling_beside_websocket(poller, socket).await;
            phone_width(poller, socket).await;
            eprintln!("  side-by-side story took {:.1?}", started.elapsed());
        },
    )
    .await;
}

/// Enters as a guest through the landing page's guest form, into `room`.
async fn enter_as_guest(b: &Browser, room: &str) {
    b.goto("/").await;
    b.wait_at("/").await;
    b.type_into("#guest-form input[name=username]", b.name)
        .await;
    b.type_into("#guest-form input[name=room]", room).await;
    b.click("#guest-form button[type=submit]").await;
    b.wait_at("/home").await; // exactly /home: the ?room= was handled and removed
    expect_open_room(b, room).await;
}

async fn connection_state(b: &Browser) -> Value {
    b.js(
        "return document.getElementById('conn-state').dataset.state",
        vec![],
    )
    .await
}

/// Every stored message shows once (no two elements share a data-id) and no send is
/// left pending (a pending copy beside the stored one would be a duplicate on screen).
async fn expect_no_repeats(b: &Browser) -> usize {
    let ids = b
        .js(
            "return [...document.querySelectorAll('#messages [data-id]')].map(m => m.dataset.id)",
            vec![],
        )
        .await;
    let ids: Vec<&str> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "[{}] a message shows twice: data-ids {ids:?}",
        b.name
    );
    let pending = b
        .js(
            "return document.querySelectorAll('#messages .message.pending').length",
            vec![],
        )
        .await;
    assert_eq!(pending, json!(0), "[{}] a send is still pending", b.name);
    ids.len()
}

async fn polling_beside_websocket(poller: &Browser, socket: &Browser) {
    // Both come in as guests (the room is made on the way in); the poller then reopens
    // /home with ?transport=polling, so its page never opens a WebSocket. An ordinary
    // navigation: Chromium may keep the old page in its back/forward cache, and the page
    // must close its socket on `pagehide` or the poller would stay "online" over it.
    tokio::join!(
        enter_as_guest(poller, SIDE_ROOM),
        enter_as_guest(socket, SIDE_ROOM)
    );
    poller
        .js(
            "location.assign(arguments[0])",
            vec![json!(format!("/home?transport=polling&room={SIDE_ROOM}"))],
        )
        .await;
    poller.wait_at("/home?transport=polling").await;
    expect_open_room(poller, SIDE_ROOM).await;
    poller
        .wait_js(
            "#conn-state shows polling",
            STEP,
            "const e = document.getElementById('conn-state'); return e.dataset.state === 'polling' && e.textContent === 'polling'",
            vec![],
        )
        .await;
    socket
        .wait_js(
            "#conn-state shows connected",
            STEP,
            "return document.getElementById('conn-state').dataset.state === 'connected'",
            vec![],
        )
        .await;
    // Presence needs the socket: the WebSocket page lists who is online — only itself, which
    // also shows the polling page holds no socket — and the polling page shows no list.
    socket
        .wait_js(
            "the online bar lists only the WebSocket user",
            STEP,
            "const bar = document.getElementById('online-bar');
             const names = [...bar.querySelectorAll('#online li')].map(e => e.textContent);
             return !bar.hidden && bar.getClientRects().length > 0 && names.join() === arguments[0];",
            vec![json!(SOCKET_USER)],
        )
        .await;
    assert!(
        !poller.is_visible("#online-bar").await,
        "a polling page shows no online list"
    );

    // WebSocket → polling: the poller sees it at its next poll (every 2 s).
    let text = "Over the socket: can you hear me?";
    let sent = send(socket, text).await;
    let polled = expect_message(poller, "theirs", SOCKET_USER, text, POLLED).await;
    let polled = sent.elapsed().max(polled);
    expect_message(socket, "mine", SOCKET_USER, text, LIVE).await;
    eprintln!("  {text:?}: {SOCKET_USER} (WebSocket) → {POLLER} (polling) in {polled:.1?}");

    // Polling → WebSocket: the POST is broadcast at once, so within the second.
    let text = "Loud and clear, one poll at a time.";
    let sent = send(poller, text).await;
    expect_delivered(poller, socket, text, sent).await;

    for b in [poller, socket] {
        expect_no_repeats(b).await;
        assert_eq!(
            connection_state(b).await,
            json!(if b.name == POLLER {
                "polling"
            } else {
                "connected"
            }),
            "[{}] the transport did not change during the exchange",
            b.name
        );
    }
    poller
        .screenshot(&artifacts().join("home-polling.png"))
        .await;
}

/// The same page at a phone's width: usable, no sideways scrolling, and it still sends.
async fn phone_width(poller: &Browser, socket: &Browser) {
    let (width, height) = PHONE;
    let viewport = socket.resize(width, height).await;
    eprintln!("  phone viewport (innerWidth, innerHeight): {viewport}");

    for css in [
        "#message-input",
        "#messages",
        "#composer button[type=submit]",
    ] {
        let element = socket.find(css).await;
        assert!(
            element.is_displayed().await.expect("is_displayed"),
            "[{SOCKET_USER}] {css} is displayed at {width} px"
        );
        // Wholly on screen: not cut off at a side nor pushed below the fold.
        let rect = socket
            .js(
                "const r = document.querySelector(arguments[0]).getBoundingClientRect();
                 return [r.left, r.top, r.right, r.bottom, r.width, r.height].map(Math.round);",
                vec![json!(css)],
            )
            .await;
        let r: Vec<i64> = rect
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert!(
            r[0] >= 0 && r[1] >= 0 && r[2] <= i64::from(width) && r[3] <= i64::from(height),
            "[{SOCKET_USER}] {css} lies inside the {width}×{height} viewport: {rect}"
        );
        assert!(r[4] > 0 && r[5] > 0, "{css} has a size: {rect}");
    }
    let feed_height = socket
        .js(
            "return document.getElementById('messages').getBoundingClientRect().height",
            vec![],
        )
        .await;
    assert!(
        feed_height.as_f64().unwrap() >= 200.0,
        "the feed keeps most of the phone's height: {feed_height} px"
    );
    let overflow = socket
        .js(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            vec![],
        )
        .await;
    assert!(
        overflow[0].as_i64() <= overflow[1].as_i64(),
        "no sideways scrolling at {width} px (scrollWidth, innerWidth): {overflow}"
    );

    // And it still sends, from the phone to the polling page.
    let text = "Typed on a phone, 390 px wide.";
    let sent = send(socket, text).await;
    expect_message(socket, "mine", SOCKET_USER, text, LIVE).await;
    expect_message(poller, "theirs", SOCKET_USER, text, POLLED).await;
    eprintln!(
        "  {text:?}: {SOCKET_USER} (phone) → {POLLER} (polling) in {:.1?}",
        sent.elapsed()
    );
    // That poll also fetched the poller's own message again (its POST answer does not move
    // the poll's cursor): it still shows once.
    for b in [poller, socket] {
        assert_eq!(
            expect_no_repeats(b).await,
            3,
            "[{}] three messages, each once",
            b.name
        );
    }
    socket.screenshot(&artifacts().join("home-phone.png")).await;
}

// ---- step 6: editing and deleting messages -------------------------------------------------

const ANN: &str = "ann";
const BOB: &str = "bob";
const EDIT_ROOM: &str = "edits";
/// A story of step 6 normally takes well under 15 s; this only guards against a hung browser.
const EDIT_STORY_LIMIT: Duration = Duration::from_secs(90);

/// Script: the feed as a reader sees it, one entry per stored message:
/// `[id, "mine"|"theirs"|"deleted", user, text, edited mark]` (null where there is none).
const SHOWN: &str =
    "return [...document.querySelectorAll('#messages div.message[data-id]')].map(m => [
    Number(m.dataset.id),
    m.classList.contains('deleted') ? 'deleted' : m.classList.contains('mine') ? 'mine' : 'theirs',
    m.querySelector('.meta > bdi.user')?.textContent ?? null,
    m.querySelector('div.text').textContent,
    m.querySelector('.meta > .edited')?.textContent ?? null]);";

fn message_css(id: u64) -> String {
    format!("#messages div.message[data-id=\"{id}\"]")
}

/// The id of the stored message showing `text` in `b`'s feed, once it shows.
async fn message_id(b: &Browser, text: &str) -> u64 {
    let id = b
        .wait_js(
            &format!("{text:?} shows, stored"),
            STEP,
            "const m = [...document.querySelectorAll('#messages div.message[data-id]:not(.deleted)')]
                .find(m => m.querySelector('div.text').textContent === arguments[0]);
             return m ? Number(m.dataset.id) : null;",
            vec![json!(text)],
        )
        .await;
    id.as_u64().expect("a message id")
}

async fn expect_focus(b: &Browser, css: &str, what: &str) {
    b.wait_js(
        &format!("the focus is on {what} ({css})"),
        STEP,
        "return !!document.activeElement && document.activeElement.matches(arguments[0])",
        vec![json!(css)],
    )
    .await;
}

/// Waits until `b` shows message `id` with `text` and an "(edited)" mark whose title says
/// when, and no edit box is open on it.
async fn expect_edited(b: &Browser, id: u64, text: &str, within: Duration) {
    let started = Instant::now();
    b.wait_js(
        &format!("message {id} shows {text:?} marked (edited)"),
        within,
        "const m = document.querySelector(arguments[0]);
         const mark = m && m.querySelector('.meta > .edited');
         return !!mark && m.querySelector('div.text').textContent === arguments[1]
            && mark.textContent === '(edited)' && mark.title.startsWith('Edited ')
            && !Number.isNaN(Date.parse(mark.getAttribute('datetime')))
            && !m.querySelector('.edit-input');",
        vec![json!(message_css(id)), json!(text)],
    )
    .await;
    eprintln!(
        "  [{}] message {id} edited: shown {:.0?} after the wait began",
        b.name,
        started.elapsed()
    );
}

/// Waits until `b` shows message `id` as a greyed "message deleted" line, its text (`gone`)
/// nowhere in the feed.
async fn expect_deleted(b: &Browser, id: u64, gone: &str, within: Duration) {
    b.wait_js(
        &format!("message {id} ({gone:?}) shows as deleted"),
        within,
        "const m = document.querySelector(arguments[0]);
         return !!m && m.classList.contains('deleted') && m.textContent === 'message deleted'
            && !m.querySelector('.meta, [data-action]')
            && ![...document.querySelectorAll('#messages div.text')].some(t => t.textContent === arguments[1]);",
        vec![json!(message_css(id)), json!(gone)],
    )
    .await;
}

/// Reloads `b`'s page (at `path`) and opens `room` from the room list.
async fn reload_into(b: &Browser, path: &str, room: &str) {
    b.client.refresh().await.expect("reload");
    b.wait_at(path).await;
    b.wait_js(
        &format!("#whoami shows {}", b.name),
        STEP,
        "return document.getElementById('whoami').textContent === arguments[0]",
        vec![json!(b.name)],
    )
    .await;
    b.click(&format!(
        "#room-list button.open-room[data-room=\"{room}\"]"
    ))
    .await;
    expect_open_room(b, room).await;
}

/// No edit box is open anywhere in `b`'s feed.
async fn expect_no_edit_box(b: &Browser) {
    b.wait_js(
        "no edit box is open",
        STEP,
        "return document.querySelectorAll('#messages .edit-input').length === 0",
        vec![],
    )
    .await;
}

/// Edits message `id` through its Edit button: the inline box opens with the focus, the
/// old text is selected and typed over, Enter saves. Returns when the keys were pressed.
async fn edit_with_button(b: &Browser, id: u64, text: &str) -> Instant {
    let message = message_css(id);
    let started = Instant::now();
    b.click(&format!("{message} button[data-action=edit]"))
        .await;
    expect_focus(
        b,
        &format!("{message} textarea.edit-input"),
        "the inline edit box",
    )
    .await;
    b.type_here(&format!(
        "{}a{}{text}{}",
        Key::Control,
        Key::Null,
        Key::Enter
    ))
    .await;
    started
}

/// ↑ in the empty compose box opens the edit box on message `id` (the last own one),
/// holding its text, with the focus.
async fn up_edits(b: &Browser, id: u64) {
    let input = b
        .js(
            "return document.getElementById('message-input').value",
            vec![],
        )
        .await;
    assert_eq!(
        input,
        json!(""),
        "[{}] ↑ edits only from an empty box",
        b.name
    );
    b.type_into("#message-input", &Key::Up.to_string()).await;
    let message = message_css(id);
    expect_focus(
        b,
        &format!("{message} textarea.edit-input"),
        "the edit box of the last own message",
    )
    .await;
    let same = b
        .js(
            "const m = document.querySelector(arguments[0]);
             return m.querySelector('.edit-input').value === m.querySelector('div.text').textContent;",
            vec![json!(message)],
        )
        .await;
    assert_eq!(
        same,
        json!(true),
        "[{}] the edit box starts with the message's text",
        b.name
    );
}

/// Runs `fetch(path)` in `b`'s page as the page's user; returns `[status, body]`.
async fn fetch_json(b: &Browser, method: &str, path: &str, body: Value) -> Value {
    b.js_async(
        "fetch(arguments[1], {
            method: arguments[0], credentials: 'same-origin',
            headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
            body: arguments[0] === 'GET' ? undefined : JSON.stringify(arguments[2]),
         }).then(async r => done([r.status, await r.json().catch(() => null)]), e => done([0, String(e)]));",
        vec![json!(method), json!(path), body],
    )
    .await
}

/// Enters `a` and `b` as guests into `room`, both on the WebSocket, each seeing the other online.
async fn two_guests_in(a: &Browser, b: &Browser, room: &str) {
    tokio::join!(enter_as_guest(a, room), enter_as_guest(b, room));
    for (me, other) in [(a, b), (b, a)] {
        me.wait_js(
            &format!("{} is connected and sees {} online", me.name, other.name),
            STEP,
            "return document.getElementById('conn-state').dataset.state === 'connected'
                && [...document.querySelectorAll('#online li')].some(e => e.textContent === arguments[0]);",
            vec![json!(other.name)],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_edit_and_delete_live_and_after_a_reload() {
    with_two_browsers([ANN, BOB], EDIT_STORY_LIMIT, async |ann, bob| {
        two_guests_in(ann, bob, EDIT_ROOM).await;
        edit_and_delete_live(ann, bob).await;
    })
    .await;
}

async fn edit_and_delete_live(ann: &Browser, bob: &Browser) {
    let first = "helo wrold";
    let sent = send(ann, first).await;
    expect_delivered(ann, bob, first, sent).await;
    let second = "See you at 8";
    let sent = send(ann, second).await;
    expect_delivered(ann, bob, second, sent).await;
    let first_id = message_id(ann, first).await;
    let second_id = message_id(ann, second).await;

    // Edit with the button: the text turns into a box; Enter saves; the focus goes back.
    let fixed = "hello world";
    let saved = edit_with_button(ann, first_id, fixed).await;
    expect_edited(bob, first_id, fixed, left_of_live(saved)).await;
    expect_edited(ann, first_id, fixed, left_of_live(saved)).await;
    eprintln!(
        "  edit of {first:?}: {ANN} → {BOB} in {:.0?}",
        saved.elapsed()
    );
    expect_focus(
        ann,
        &format!("{} button[data-action=edit]", message_css(first_id)),
        "the Edit button again",
    )
    .await;

    // ↑ in the empty compose box edits the last own message; Escape cancels, changing nothing.
    up_edits(ann, second_id).await;
    ann.screenshot(&artifacts().join("home-editing.png")).await;
    ann.type_here(&format!(" — or 9?{}", Key::Escape)).await;
    expect_no_edit_box(ann).await;
    expect_focus(ann, "#message-input", "the compose box after Escape").await;
    for b in [ann, bob] {
        let shown = b
            .text(&format!("{} div.text", message_css(second_id)))
            .await;
        assert_eq!(shown, second, "[{}] Escape saved nothing", b.name);
        assert!(
            !b.is_visible(&format!("{} .edited", message_css(second_id)))
                .await,
            "[{}] no (edited) mark after Escape",
            b.name
        );
    }
    // ↑ again, type at the end, Enter: saved, and the focus is back in the compose box.
    up_edits(ann, second_id).await;
    let saved = Instant::now();
    ann.type_here(&format!(", not 7{}", Key::Enter)).await;
    let second_fixed = format!("{second}, not 7");
    expect_edited(bob, second_id, &second_fixed, left_of_live(saved)).await;
    expect_edited(ann, second_id, &second_fixed, left_of_live(saved)).await;
    expect_focus(ann, "#message-input", "the compose box after saving").await;
    // ↑ in a box with text is just a key of the text: no edit box.
    ann.type_into("#message-input", &format!("draft{}", Key::Up))
        .await;
    assert!(
        !ann.is_visible("#messages .edit-input").await,
        "↑ with text in the box edits nothing"
    );
    ann.clear("#message-input").await;

    // Bob: no edit or delete control on Ann's messages, only on his own; ↑ edits his own.
    let his = "Looking forward to it";
    let sent = send(bob, his).await;
    expect_delivered(bob, ann, his, sent).await;
    let his_id = message_id(bob, his).await;
    let controls = bob
        .js(
            "return [...document.querySelectorAll('#messages div.message[data-id]')]
                .map(m => [Number(m.dataset.id), m.querySelectorAll('[data-action=edit], [data-action=delete]').length]);",
            vec![],
        )
        .await;
    assert_eq!(
        controls,
        json!([[first_id, 0], [second_id, 0], [his_id, 2]]),
        "[{BOB}] Edit and Delete on his own message only"
    );
    up_edits(bob, his_id).await;
    bob.type_here(&Key::Escape.to_string()).await;
    expect_no_edit_box(bob).await;
    // And the server refuses it anyway.
    let refused = fetch_json(
        bob,
        "PATCH",
        &format!("/api/rooms/{EDIT_ROOM}/messages/{first_id}"),
        json!({"text": "mine now"}),
    )
    .await;
    assert_eq!(
        refused[0],
        json!(403),
        "[{BOB}] editing Ann's message: {refused}"
    );
    assert_eq!(refused[1]["error"]["code"], json!("forbidden"));

    // Delete asks once more, inline: Escape keeps the message; Enter on "Delete" deletes it.
    let oops = "oops, wrong room";
    let sent = send(ann, oops).await;
    expect_delivered(ann, bob, oops, sent).await;
    let oops_id = message_id(ann, oops).await;
    let delete = format!("{} button[data-action=delete]", message_css(oops_id));
    let confirm = format!(
        "{} button[data-action=confirm-delete]",
        message_css(oops_id)
    );
    ann.click(&delete).await;
    expect_focus(ann, &confirm, "the confirming Delete").await;
    ann.type_here(&Key::Escape.to_string()).await;
    expect_focus(ann, &delete, "the Delete button after Escape").await;
    assert!(
        !ann.is_visible(&confirm).await,
        "Escape closed the question"
    );
    ann.click(&delete).await;
    expect_focus(ann, &confirm, "the confirming Delete").await;
    let deleted = Instant::now();
    ann.type_here(&Key::Enter.to_string()).await;
    expect_deleted(bob, oops_id, oops, left_of_live(deleted)).await;
    expect_deleted(ann, oops_id, oops, left_of_live(deleted)).await;
    eprintln!(
        "  delete of {oops:?}: {ANN} → {BOB} in {:.0?}",
        deleted.elapsed()
    );
    expect_focus(ann, "#message-input", "the compose box after deleting").await;
    // ↑ skips a deleted message: the last own one left is the second.
    up_edits(ann, second_id).await;
    ann.type_here(&Key::Escape.to_string()).await;

    // After a reload, history shows the same: edited texts with their mark, the deleted line.
    let before = bob.js(SHOWN, vec![]).await;
    assert_eq!(
        before,
        json!([
            [first_id, "theirs", ANN, fixed, "(edited)"],
            [second_id, "theirs", ANN, second_fixed, "(edited)"],
            [his_id, "mine", BOB, his, null],
            [oops_id, "deleted", null, "message deleted", null],
        ]),
        "[{BOB}] the feed before the reload"
    );
    reload_into(bob, "/home", EDIT_ROOM).await;
    bob.wait_js(
        "the reloaded feed shows what it showed before",
        STEP,
        &format!("return JSON.stringify((function () {{ {SHOWN} }})()) === arguments[0];"),
        vec![json!(before.to_string())],
    )
    .await;
    expect_edited(bob, first_id, fixed, STEP).await;
    expect_no_repeats(bob).await;
    bob.screenshot(&artifacts().join("home-edited.png")).await;
}

// ---- step 6: the same to a polling page ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_reach_a_polling_page() {
    const ROOM: &str = "polled-edits";
    with_two_browsers([ANN, POLLER], EDIT_STORY_LIMIT, async |ann, poller| {
        tokio::join!(enter_as_guest(ann, ROOM), enter_as_guest(poller, ROOM));
        poller
            .js(
                "location.assign(arguments[0])",
                vec![json!(format!("/home?transport=polling&room={ROOM}"))],
            )
            .await;
        poller.wait_at("/home?transport=polling").await;
        expect_open_room(poller, ROOM).await;
        poller
            .wait_js(
                "#conn-state shows polling",
                STEP,
                "return document.getElementById('conn-state').dataset.state === 'polling'",
                vec![],
            )
            .await;

        let first = "first draft";
        let second = "this one goes";
        for text in [first, second] {
            send(ann, text).await;
            expect_message(poller, "theirs", ANN, text, POLLED).await;
        }
        let first_id = message_id(ann, first).await;
        let second_id = message_id(ann, second).await;
        // The polling page reads what it shows: its marker moves over HTTP (PUT …/read).
        expect_read_state(poller, ROOM, second_id, 0).await;

        // Ann (WebSocket) edits and deletes; the polling page sees both at its next poll.
        let saved = edit_with_button(ann, first_id, "final draft").await;
        expect_edited(poller, first_id, "final draft", POLLED).await;
        eprintln!(
            "  edit: {ANN} (WebSocket) → {POLLER} (polling) in {:.1?}",
            saved.elapsed()
        );
        ann.click(&format!(
            "{} button[data-action=delete]",
            message_css(second_id)
        ))
        .await;
        ann.click(&format!(
            "{} button[data-action=confirm-delete]",
            message_css(second_id)
        ))
        .await;
        let deleted = Instant::now();
        expect_deleted(ann, second_id, second, LIVE).await;
        expect_deleted(poller, second_id, second, POLLED).await;
        eprintln!(
            "  delete: {ANN} (WebSocket) → {POLLER} (polling) in {:.1?}",
            deleted.elapsed()
        );

        // The polling page edits too (over HTTP): the WebSocket page sees it at once.
        let mine = "polled and edited";
        send(poller, mine).await;
        expect_message(ann, "theirs", POLLER, mine, POLLED).await;
        let mine_id = message_id(poller, mine).await;
        up_edits(poller, mine_id).await;
        let saved = Instant::now();
        poller.type_here(&format!("!{}", Key::Enter)).await;
        let edited = format!("{mine}!");
        expect_edited(ann, mine_id, &edited, left_of_live(saved)).await;
        expect_edited(poller, mine_id, &edited, LIVE).await;

        // Each shows every message once, and a reload of the polling page shows the same.
        let before = poller.js(SHOWN, vec![]).await;
        assert_eq!(
            before,
            json!([
                [first_id, "theirs", ANN, "final draft", "(edited)"],
                [second_id, "deleted", null, "message deleted", null],
                [mine_id, "mine", POLLER, edited, "(edited)"],
            ]),
            "[{POLLER}] the feed"
        );
        for b in [ann, poller] {
            expect_no_repeats(b).await;
        }
        reload_into(poller, "/home?transport=polling", ROOM).await;
        poller
            .wait_js(
                "the reloaded polling page shows what it showed before",
                STEP,
                &format!("return JSON.stringify((function () {{ {SHOWN} }})()) === arguments[0];"),
                vec![json!(before.to_string())],
            )
            .await;
        poller
            .screenshot(&artifacts().join("home-polling-edited.png"))
            .await;
    })
    .await;
}

// ---- step 6: back from away, by seq ------------------------------------------------------

/// More events than one `joined` carries (its history holds at most 500).
const AWAY_POSTS: usize = 520;

/// Script for `b`'s page: record every `join` frame the page sends from now on.
const SPY_ON_JOINS: &str = "window.joinsSent = [];
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
        try { const frame = JSON.parse(data); if (frame.type === 'join') window.joinsSent.push(frame); } catch {}
        return send.call(this, data);
    };";

/// As the browser does with a page it keeps in its back/forward cache: `pagehide` (the page
/// closes its socket), and later `pageshow` (it reconnects and resumes).
async fn page_hidden(b: &Browser) {
    b.js(
        "window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true }))",
        vec![],
    )
    .await;
}

async fn page_shown(b: &Browser) {
    b.js(
        "window.dispatchEvent(new PageTransitionEvent('pageshow', { persisted: true }))",
        vec![],
    )
    .await;
}

/// The `join` frames of `room` that `b` sent since [`SPY_ON_JOINS`], once there are `count`.
async fn joins_sent(b: &Browser, room: &str, count: usize) -> Value {
    b.wait_js(
        &format!("{count} join frame(s) of {room} were sent"),
        STEP,
        "const joins = window.joinsSent.filter(f => f.room === arguments[0]);
         return joins.length >= arguments[1] && joins;",
        vec![json!(room), json!(count)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_back_from_away_resumes_by_seq_and_fetches_what_one_join_cannot_carry() {
    const ROOM: &str = "back-from-away";
    // Ann's page posts hundreds of messages in a row: no send rate for this story.
    with_two_browsers_on(|config| config.send_rate = None, [ANN, BOB], EDIT_STORY_LIMIT, async |ann, bob| {
        two_guests_in(ann, bob, ROOM).await;
        let before = "before the break";
        let sent = send(ann, before).await;
        expect_delivered(ann, bob, before, sent).await;
        let before_id = message_id(bob, before).await;
        // An edit Bob sees live: the last seq he saw is now the edit's, past the last message id.
        let path = |id: u64| format!("/api/rooms/{ROOM}/messages/{id}");
        let edit = fetch_json(ann, "PATCH", &path(before_id), json!({"text": "before the break (1)"})).await;
        assert_eq!(edit[0], json!(200), "{edit}");
        let seen = edit[1]["seq"].as_u64().expect("the edit's seq");
        assert!(seen > before_id);
        expect_edited(bob, before_id, "before the break (1)", LIVE).await;

        // Bob's page goes away; Ann edits, posts more than a page, deletes, edits again.
        bob.js(SPY_ON_JOINS, vec![]).await;
        page_hidden(bob).await;
        ann.wait_js(
            "Ann sees Bob go offline",
            STEP,
            "return [...document.querySelectorAll('#online li')].map(e => e.textContent).join() === arguments[0]",
            vec![json!(ANN)],
        )
        .await;
        let head = ann
            .js_async(
                "(async () => {
                    const call = async (method, path, body) => {
                        const r = await fetch(path, { method, credentials: 'same-origin',
                            headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
                            body: JSON.stringify(body) });
                        if (!r.ok) throw new Error(method + ' ' + path + ': ' + r.status);
                        return r.json();
                    };
                    const [room, before, posts] = arguments;
                    const messages = `/api/rooms/${room}/messages`;
                    await call('PATCH', `${messages}/${before}`, { text: 'before the break (2)' });
                    const ids = [];
                    for (let i = 1; i <= posts; i += 1) {
                        ids.push((await call('POST', messages, { text: `away ${i}`, client_id: `away-${i}` })).id);
                    }
                    await call('DELETE', `${messages}/${ids[2]}`, {});
                    const last = await call('PATCH', `${messages}/${ids[posts - 1]}`, { text: 'the last one, edited' });
                    return [ids, last.seq];
                })().then(done, (e) => done(String(e)));",
                vec![json!(ROOM), json!(before_id), json!(AWAY_POSTS)],
            )
            .await;
        let ids: Vec<u64> = head[0]
            .as_array()
            .unwrap_or_else(|| panic!("Ann's changes failed: {head}"))
            .iter()
            .map(|id| id.as_u64().unwrap())
            .collect();
        let head = head[1].as_u64().expect("the last seq");

        // Back: the page resumes after the last seq it saw — the edit's, not message 1's —
        // gets one page in `joined` and fetches the rest from /events, edits and deletes included.
        let back = Instant::now();
        page_shown(bob).await;
        let joins = joins_sent(bob, ROOM, 1).await;
        assert_eq!(joins[0], json!({"type": "join", "room": ROOM, "after": seen}), "[{BOB}] resumed by seq");
        expect_edited(bob, ids[AWAY_POSTS - 1], "the last one, edited", STEP).await;
        expect_edited(bob, before_id, "before the break (2)", STEP).await;
        expect_deleted(bob, ids[2], "away 3", STEP).await;
        eprintln!("  back from away: {} events caught up in {:.1?}", head - seen, back.elapsed());
        assert_eq!(expect_no_repeats(bob).await, 1 + AWAY_POSTS, "[{BOB}] every message once");

        // Away and back once more: it now resumes from the room's head.
        page_hidden(bob).await;
        page_shown(bob).await;
        let joins = joins_sent(bob, ROOM, 2).await;
        assert_eq!(joins[1]["after"], json!(head), "[{BOB}] caught up to the room's last seq");
        // And it is live again.
        let after = "welcome back";
        let sent = send(ann, after).await;
        expect_delivered(ann, bob, after, sent).await;
    })
    .await;
}

// ---- step 6: read markers — unread counts, the "New messages" line, two windows -----------

/// A read story normally takes well under 15 s; this only guards against a hung browser.
const READ_STORY_LIMIT: Duration = Duration::from_secs(90);

fn room_button(room: &str) -> String {
    format!("#room-list button.open-room[data-room=\"{room}\"]")
}

/// Waits until `b`'s unread badge of `room` shows `count` (0: no badge shown).
async fn expect_badge(b: &Browser, room: &str, count: u64, within: Duration) {
    b.wait_js(
        &format!("the unread badge of {room} shows {count}"),
        within,
        "const e = document.querySelector(`#room-list button.open-room[data-room=\"${arguments[0]}\"] span.unread`);
         if (!e) return false;
         const shown = !e.hidden && e.getClientRects().length > 0;
         return arguments[1] === 0 ? !shown : shown && e.textContent === String(arguments[1]);",
        vec![json!(room), json!(count)],
    )
    .await;
}

/// Waits until the server has `b`'s user in `room` read up to `read` with `unread` unread
/// (GET /api/subscriptions, asked from the page).
async fn expect_read_state(b: &Browser, room: &str, read: u64, unread: u64) {
    let mut last = Value::Null;
    let reached = browser_support::poll(STEP, async || {
        last = fetch_json(b, "GET", "/api/subscriptions", Value::Null).await;
        let state = last[1].as_array()?.iter().find(|r| r["name"] == room)?;
        (state["read"] == read && state["unread"] == unread).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "[{}] the server should have {room} read up to {read} with {unread} unread: {last}",
        b.name
    );
}

/// Waits until `b`'s feed shows one "New messages" line, right before message `id`;
/// returns the id of the message above it (null if none).
async fn expect_new_messages_line(b: &Browser, id: u64) -> Value {
    b.wait_js(
        &format!("one \"New messages\" line shows, before message {id}"),
        STEP,
        "const lines = document.querySelectorAll('#messages .new-messages');
         if (lines.length !== 1) return false;
         const line = lines[0];
         const next = line.nextElementSibling;
         if (line.textContent !== 'New messages' || line.getClientRects().length === 0
             || !next || !next.matches('div.message[data-id]') || Number(next.dataset.id) !== arguments[0]) return false;
         const above = line.previousElementSibling;
         return [above && above.dataset.id ? Number(above.dataset.id) : null];",
        vec![json!(id)],
    )
    .await[0]
        .clone()
}

async fn new_messages_lines(b: &Browser) -> Value {
    b.js(
        "return document.querySelectorAll('#messages .new-messages').length",
        vec![],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_badge_comes_from_the_marker_and_opening_the_room_draws_the_new_messages_line() {
    const ROOM: &str = "catch-up";
    with_two_browsers([ANN, BOB], READ_STORY_LIMIT, async |ann, bob| {
        two_guests_in(ann, bob, ROOM).await;
        // Ann has the room open: Bob's message is read as it comes, and her marker moves to it.
        let seen = "first, read at once";
        let sent = send(bob, seen).await;
        expect_delivered(bob, ann, seen, sent).await;
        let seen_id = message_id(ann, seen).await;
        expect_read_state(ann, ROOM, seen_id, 0).await;

        // Ann goes to general. In the room she posts (from there, over HTTP): her own
        // message is not unread. Bob posts three; the third he deletes again.
        ann.click(&room_button("general")).await;
        expect_open_room(ann, "general").await;
        let own = fetch_json(
            ann,
            "POST",
            &format!("/api/rooms/{ROOM}/messages"),
            json!({"text": "mine: not unread", "client_id": "ann-own-1"}),
        )
        .await;
        assert_eq!(own[0], json!(201), "[{ANN}] posting over HTTP: {own}");
        let own_id = own[1]["id"].as_u64().expect("the message id");
        expect_message(bob, "theirs", ANN, "mine: not unread", LIVE).await;
        let texts = ["are you there?", "hello?", "never mind"];
        let mut ids = Vec::new();
        let mut sent = Instant::now();
        for text in texts {
            sent = send(bob, text).await;
            expect_message(bob, "mine", BOB, text, LIVE).await;
            ids.push(message_id(bob, text).await);
        }
        expect_badge(ann, ROOM, 3, left_of_live(sent)).await;
        eprintln!(
            "  [{ANN}] badge of {ROOM} shows 3 {:.0?} after Bob's last send",
            sent.elapsed()
        );
        let title = ann.js("return document.title", vec![]).await;
        assert!(
            title.as_str().unwrap().starts_with("(3)"),
            "[{ANN}] the tab title counts unread: {title}"
        );
        expect_read_state(ann, ROOM, seen_id, 3).await;

        // A deleted message is no longer unread: the badge goes down, live.
        bob.click(&format!(
            "{} button[data-action=delete]",
            message_css(ids[2])
        ))
        .await;
        let deleted = Instant::now();
        bob.click(&format!(
            "{} button[data-action=confirm-delete]",
            message_css(ids[2])
        ))
        .await;
        expect_badge(ann, ROOM, 2, left_of_live(deleted)).await;
        expect_read_state(ann, ROOM, seen_id, 2).await;

        // Ann opens the room: the line sits before Bob's first unread message (after her own),
        // the badge clears, and the server has her marker at the newest message.
        ann.click(&room_button(ROOM)).await;
        expect_open_room(ann, ROOM).await;
        let above = expect_new_messages_line(ann, ids[0]).await;
        assert_eq!(
            above,
            json!(own_id),
            "[{ANN}] her own message stays above the line"
        );
        expect_badge(ann, ROOM, 0, STEP).await;
        expect_read_state(ann, ROOM, ids[2], 0).await;
        let title = ann.js("return document.title", vec![]).await;
        assert!(
            !title.as_str().unwrap().starts_with('('),
            "[{ANN}] nothing unread in the title: {title}"
        );

        // While she reads, a new message is read at once: no badge, and the line stays put.
        let more = "oh, there you are";
        let sent = send(bob, more).await;
        expect_delivered(bob, ann, more, sent).await;
        let more_id = message_id(ann, more).await;
        expect_read_state(ann, ROOM, more_id, 0).await;
        expect_badge(ann, ROOM, 0, STEP).await;
        expect_new_messages_line(ann, ids[0]).await;
        ann.screenshot(&artifacts().join("home-new-messages.png"))
            .await;

        // Left and opened again: everything is read, so no line.
        ann.click(&room_button("general")).await;
        expect_open_room(ann, "general").await;
        ann.click(&room_button(ROOM)).await;
        expect_open_room(ann, ROOM).await;
        message_id(ann, more).await;
        assert_eq!(
            new_messages_lines(ann).await,
            json!(0),
            "[{ANN}] no line once all is read"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_in_one_window_clears_the_badge_in_the_other_also_after_a_reload() {
    const DANA: &str = "dana";
    const DANA_PASSWORD: &str = "dana-Secret-333";
    const ELSEWHERE: &str = "elsewhere";
    // Two browsers (two devices), one account: window 1 signs up, window 2 logs in.
    with_two_browsers(
        [DANA, "dana-window-2"],
        READ_STORY_LIMIT,
        async |one, two| {
            one.goto("/").await;
            one.wait_at("/").await;
            one.click("#show-signup").await;
            fill(one, "#signup-form", DANA, DANA_PASSWORD).await;
            one.click("#signup-form button[type=submit]").await;
            expect_home_as(one, DANA).await;
            one.click("#new-room").await;
            one.type_into("#new-room-name", &format!("{ELSEWHERE}{}", Key::Enter))
                .await;
            expect_open_room(one, ELSEWHERE).await;

            two.goto("/").await;
            two.wait_at("/").await;
            two.click("#show-login").await;
            fill(two, "#login-form", DANA, DANA_PASSWORD).await;
            two.click("#login-form button[type=submit]").await;
            expect_home_as(two, DANA).await;
            two.click(&room_button(ELSEWHERE)).await;
            expect_open_room(two, ELSEWHERE).await;

            // Someone else posts in general, where neither window is.
            let addr = one
                .origin()
                .trim_start_matches("http://")
                .parse()
                .expect("the server's address");
            let eve = common::Endpoint { addr }.guest("eve").await;
            let sent = Instant::now();
            let first = eve.send_http("general", "news for dana", "eve-1").await;
            eve.send_http("general", "more news", "eve-2").await;
            let last = eve.send_http("general", "and that's all", "eve-3").await;
            for window in [one, two] {
                expect_badge(window, "general", 3, left_of_live(sent)).await;
            }

            // Window 1 reads general: window 2's badge clears, live.
            let opened = Instant::now();
            one.click(&room_button("general")).await;
            expect_open_room(one, "general").await;
            expect_badge(one, "general", 0, STEP).await;
            expect_badge(two, "general", 0, left_of_live(opened)).await;
            eprintln!(
                "  read in window 1, badge cleared in window 2 {:.0?} after the click",
                opened.elapsed()
            );
            expect_new_messages_line(one, common::id(&first)).await;
            one.screenshot(&artifacts().join("home-two-windows.png"))
                .await;
            expect_read_state(two, "general", common::id(&last), 0).await;

            // Window 2 reloads (into the other room, so it does not read general itself): still 0.
            two.goto(&format!("/home?room={ELSEWHERE}")).await;
            expect_home_as(two, DANA).await;
            expect_open_room(two, ELSEWHERE).await;
            expect_in_list(two, "general", true).await;
            assert_eq!(
                unread_badge(two, "general").await,
                json!(["hidden", "0"]),
                "[window 2] nothing unread after the reload"
            );
            let title = two.js("return document.title", vec![]).await;
            assert!(
                !title.as_str().unwrap().starts_with('('),
                "[window 2] nothing unread in the title: {title}"
            );

            // And the other way round after the reload: window 2 reads, window 1's badge clears.
            one.click(&room_button(ELSEWHERE)).await;
            expect_open_room(one, ELSEWHERE).await;
            let sent = Instant::now();
            let again = eve.send_http("general", "one more thing", "eve-4").await;
            for window in [one, two] {
                expect_badge(window, "general", 1, left_of_live(sent)).await;
            }
            let opened = Instant::now();
            two.click(&room_button("general")).await;
            expect_open_room(two, "general").await;
            expect_badge(one, "general", 0, left_of_live(opened)).await;
            expect_new_messages_line(two, common::id(&again)).await;
            expect_read_state(one, "general", common::id(&again), 0).await;
        },
    )
    .await;
}

// ---- step 9: direct messages, private rooms and their members, mentions -------------------

/// A story of step 9 normally takes well under 20 s; this only guards against a hung browser.
const STEP9_STORY_LIMIT: Duration = Duration::from_secs(90);
const CAROL_PASSWORD: &str = "carol-Secret-4444";

/// Signs `b` up (over the API, from the landing page) as a new account named after the
/// browser, and waits until /home is up with its live connection.
async fn signed_up_home(b: &Browser, password: &str) {
    b.goto("/").await;
    b.wait_at("/").await;
    let reply = fetch_json(
        b,
        "POST",
        "/api/signup",
        json!({"username": b.name, "password": password}),
    )
    .await;
    assert_eq!(reply[0], json!(201), "[{}] sign up: {reply}", b.name);
    b.goto("/home").await;
    expect_home_as(b, b.name).await;
}

/// The server `b` talks to, for users that need no browser.
fn endpoint_of(b: &Browser) -> common::Endpoint {
    let addr = b
        .origin()
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address");
    common::Endpoint { addr }
}

/// Creates (or subscribes to) `room` with the + form and waits until it is open.
async fn room_with_plus(b: &Browser, room: &str) {
    b.click("#new-room").await;
    b.type_into("#new-room-name", &format!("{room}{}", Key::Enter))
        .await;
    expect_in_list(b, room, true).await;
    expect_open_room(b, room).await;
}

fn dm_button(room: &str) -> String {
    format!("#dm-list button.open-room[data-room=\"{room}\"]")
}

/// Waits until `b` lists a direct message with `with`; returns its room name.
async fn expect_dm_listed(b: &Browser, with: &str) -> String {
    let room = b
        .wait_js(
            &format!("the direct messages list one with {with}"),
            STEP,
            "const e = [...document.querySelectorAll('#dm-list button.open-room')]
                .find(e => e.querySelector('.room-name').textContent === arguments[0]);
             return e && e.getClientRects().length > 0 && e.dataset.room;",
            vec![json!(with)],
        )
        .await;
    room.as_str().expect("a room name").to_owned()
}

/// Waits until the direct message `room` with `with` is open and its history loaded.
async fn expect_open_dm(b: &Browser, room: &str, with: &str) {
    b.wait_js(
        &format!("the direct message with {with} is open and its history loaded"),
        STEP,
        "const active = document.querySelector('#dm-list li.active button.open-room');
         return !!active && active.dataset.room === arguments[0]
            && document.getElementById('room-title').textContent === arguments[1]
            && document.getElementById('history-status').textContent !== 'Loading messages…'
            && !document.getElementById('message-input').disabled",
        vec![json!(room), json!(with)],
    )
    .await;
}

/// Waits until the row `button` (CSS of its open button) shows `unread` and `mentions`
/// (0: that badge is not shown).
async fn expect_badges(b: &Browser, button: &str, unread: u64, mentions: u64, within: Duration) {
    b.wait_js(
        &format!("{button} shows {unread} unread, {mentions} mentioning"),
        within,
        "const e = document.querySelector(arguments[0]);
         if (!e) return false;
         const shows = (badge, count, text) => {
             const shown = !badge.hidden && badge.getClientRects().length > 0;
             return count === 0 ? !shown : shown && badge.textContent === text;
         };
         return shows(e.querySelector('span.unread'), arguments[1], String(arguments[1]))
             && shows(e.querySelector('span.mentions'), arguments[2], '@' + arguments[2]);",
        vec![json!(button), json!(unread), json!(mentions)],
    )
    .await;
}

async fn title_of(b: &Browser) -> String {
    b.js("return document.title", vec![])
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_shows_in_the_other_users_list_with_an_unread_badge() {
    with_two_browsers(["alice", "bob"], STEP9_STORY_LIMIT, async |alice, bob| {
        tokio::join!(
            signed_up_home(alice, ALICE_PASSWORD),
            signed_up_home(bob, BOB_PASSWORD)
        );
        expect_open_room(bob, "general").await;
        assert!(
            bob.is_visible("#dm-list-empty").await,
            "[bob] no direct messages yet"
        );

        // Alice opens one with Bob by name; a name that is no account is refused by the form.
        alice.click("#new-dm").await;
        alice
            .type_into("#new-dm-name", &format!("nobody{}", Key::Enter))
            .await;
        let error = expect_form_error(alice, "#new-dm-form", "no such user").await;
        assert!(error.contains("nobody"), "{error:?}");
        alice.clear("#new-dm-name").await;
        alice
            .type_into("#new-dm-name", &format!("Bob{}", Key::Enter))
            .await;
        let dm = expect_dm_listed(alice, "bob").await;
        assert!(dm.starts_with("dm-"), "{dm}");
        expect_open_dm(alice, &dm, "bob").await;
        expect_in_list(alice, &dm, false).await; // not among the chatrooms

        let text = "psst — <b>just</b> between us";
        let sent = send(alice, text).await;
        expect_message(alice, "mine", "alice", text, left_of_live(sent)).await;

        // Bob's page lists it, named after Alice, with one unread message.
        assert_eq!(expect_dm_listed(bob, "alice").await, dm);
        expect_badges(bob, &dm_button(&dm), 1, 0, STEP).await;
        eprintln!(
            "  [bob] the direct message listed with 1 unread {:.0?} after the send",
            sent.elapsed()
        );
        expect_in_list(bob, &dm, false).await;
        let title = title_of(bob).await;
        assert!(title.starts_with("(1)"), "[bob] the tab title counts it: {title}");

        // He reads it: the badge clears; his answer reaches Alice live.
        bob.click(&dm_button(&dm)).await;
        expect_open_dm(bob, &dm, "alice").await;
        expect_message(bob, "theirs", "alice", text, STEP).await;
        expect_badges(bob, &dm_button(&dm), 0, 0, STEP).await;
        let answer = "got it, alice";
        let sent = send(bob, answer).await;
        expect_delivered(bob, alice, answer, sent).await;

        // After a reload it is still listed (GET /api/dms), read.
        bob.goto("/home").await;
        expect_home_as(bob, "bob").await;
        assert_eq!(expect_dm_listed(bob, "alice").await, dm);
        expect_badges(bob, &dm_button(&dm), 0, 0, STEP).await;
        bob.click(&dm_button(&dm)).await;
        expect_open_dm(bob, &dm, "alice").await;
        expect_message(bob, "mine", "bob", answer, STEP).await;
        bob.screenshot(&artifacts().join("home-direct-message.png"))
            .await;
    })
    .await;
}

/// Waits until `b`'s members panel lists `names` (in order).
async fn expect_members(b: &Browser, names: &[&str]) {
    b.wait_js(
        &format!("the members panel lists {names:?}"),
        STEP,
        "return [...document.querySelectorAll('#member-list li.member bdi.member-name')]
            .map(e => e.textContent).join() === arguments[0]
            && document.getElementById('members-toggle').textContent === `Members (${arguments[1]})`;",
        vec![json!(names.join(",")), json!(names.len())],
    )
    .await;
}

/// Waits until the page's error line says `what`.
async fn expect_app_error(b: &Browser, what: &str) {
    b.wait_js(
        &format!("the page says {what:?}"),
        STEP,
        "return document.getElementById('app-error').textContent.includes(arguments[0])",
        vec![json!(what)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_room_is_found_and_opened_by_its_members_only() {
    const SECRET: &str = "secret-plans";
    with_two_browsers(["alice", "carol"], STEP9_STORY_LIMIT, async |alice, carol| {
        tokio::join!(
            signed_up_home(alice, ALICE_PASSWORD),
            signed_up_home(carol, CAROL_PASSWORD)
        );
        let bob = endpoint_of(alice)
            .anonymous()
            .signed_up("bob", BOB_PASSWORD)
            .await;

        // Alice creates it with the "private" box ticked: her room, with her as its member.
        alice.click("#new-room").await;
        alice.type_into("#new-room-name", SECRET).await;
        alice.click("#new-room-private").await;
        alice.click("#new-room-form button[type=submit]").await;
        expect_in_list(alice, SECRET, true).await;
        expect_open_room(alice, SECRET).await;
        assert!(alice.is_visible("#room-private").await, "marked private");
        alice.click("#members-toggle").await;
        expect_members(alice, &["alice"]).await;

        // She adds Bob; a name that is no account is refused next to the form.
        alice
            .type_into("#add-member-name", &format!("nobody{}", Key::Enter))
            .await;
        expect_form_error(alice, "#add-member-form", "no such user").await;
        alice.clear("#add-member-name").await;
        alice
            .type_into("#add-member-name", &format!("bob{}", Key::Enter))
            .await;
        expect_members(alice, &["alice", "bob"]).await;
        let (status, body) = bob.get(&format!("/api/rooms/{SECRET}/messages")).await;
        assert_eq!(status, 200, "[bob] a member reads it: {body}");

        // Carol can neither find it…
        carol.type_into("#room-search", "secret").await;
        carol
            .wait_js(
                "the search finds nothing",
                STEP,
                "const list = document.getElementById('search-results');
                 return !list.hidden && list.querySelector('.no-match') !== null
                     && list.querySelectorAll('[role=option]').length === 0;",
                vec![],
            )
            .await;
        // …nor open it by its address: the page says it is not found.
        carol.goto(&format!("/home?room={SECRET}")).await;
        expect_home_as(carol, "carol").await;
        expect_app_error(carol, &format!("Cannot open room “{SECRET}”: not found")).await;
        expect_open_room(carol, "general").await;
        expect_in_list(carol, SECRET, false).await;
        let messages = fetch_json(carol, "GET", &format!("/api/rooms/{SECRET}/messages"), Value::Null).await;
        assert_eq!(messages[0], json!(404), "{messages}");
        assert_eq!(messages[1]["error"]["code"], json!("room_not_found"));

        // Once Alice adds her, Carol finds it, opens it and sees who is in it (no controls).
        alice
            .type_into("#add-member-name", &format!("carol{}", Key::Enter))
            .await;
        expect_members(alice, &["alice", "bob", "carol"]).await;
        carol.type_into("#room-search", "secret").await;
        let option = format!("#search-results li[role=option][data-room=\"{SECRET}\"]");
        carol.click(&option).await;
        expect_open_room(carol, SECRET).await;
        carol.click("#subscribe").await;
        expect_in_list(carol, SECRET, true).await;
        carol.click("#members-toggle").await;
        expect_members(carol, &["alice", "bob", "carol"]).await;
        assert!(
            !carol.is_visible("#add-member-form").await,
            "[carol] only the creator adds members"
        );
        assert_eq!(
            carol
                .js("return document.querySelectorAll('#member-list button').length", vec![])
                .await,
            json!(0),
            "[carol] only the creator removes members"
        );

        // A message that mentions Carol is highlighted on her side only.
        let text = "welcome, @Carol!";
        let sent = send(alice, text).await;
        expect_delivered(alice, carol, text, sent).await;
        let highlighted = "return [...document.querySelectorAll('#messages div.message.mention div.text')].map(e => e.textContent)";
        assert_eq!(carol.js(highlighted, vec![]).await, json!([text]));
        assert_eq!(alice.js(highlighted, vec![]).await, json!([]));

        // Alice removes Carol: the room leaves Carol's page at once.
        alice
            .click("#member-list button.remove-member[data-user=\"carol\"]")
            .await;
        let removed = Instant::now();
        carol
            .wait_js(
                "the room is gone from the list and the view",
                left_of_live(removed),
                "return ![...document.querySelectorAll('#room-list button.open-room')].some(e => e.dataset.room === arguments[0])
                    && document.getElementById('room-title').textContent === 'No room open'
                    && document.getElementById('history-status').textContent === `You were removed from ${arguments[0]}.`
                    && document.querySelectorAll('#messages .message').length === 0;",
                vec![json!(SECRET)],
            )
            .await;
        eprintln!("  [carol] removed from {SECRET} {:.0?} after the click", removed.elapsed());
        expect_members(alice, &["alice", "bob"]).await;
        let messages = fetch_json(carol, "GET", &format!("/api/rooms/{SECRET}/messages"), Value::Null).await;
        assert_eq!(messages[0], json!(404), "{messages}");
        alice.screenshot(&artifacts().join("home-private-room.png"))
            .await;
    })
    .await;
}

/// Script: replaces the browser's notifications with a recorder (permission granted) and
/// makes the page believe its tab is hidden.
const FAKE_HIDDEN_WITH_NOTIFICATIONS: &str = "
    window.notified = [];
    window.Notification = class {
        static get permission() { return 'granted'; }
        static requestPermission() { return Promise.resolve('granted'); }
        constructor(title, options) { window.notified.push([title, options.body]); }
        addEventListener() {}
        close() {}
    };
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_in_another_room_shows_a_badge_and_is_highlighted_when_opened() {
    const ROOM_A: &str = "room-a";
    const ROOM_B: &str = "room-b";
    with_two_browsers(["alice", "bob"], STEP9_STORY_LIMIT, async |alice, bob| {
        tokio::join!(
            signed_up_home(alice, ALICE_PASSWORD),
            signed_up_home(bob, BOB_PASSWORD)
        );
        for room in [ROOM_A, ROOM_B] {
            room_with_plus(alice, room).await;
            room_with_plus(bob, room).await;
        }
        bob.click(&room_button(ROOM_A)).await;
        expect_open_room(bob, ROOM_A).await;
        // Alice, in room B, sees Bob there (his page joined every room it lists).
        alice
            .wait_js(
                "Bob is online in room B",
                STEP,
                "return [...document.querySelectorAll('#online li')].some(e => e.textContent === 'bob')",
                vec![],
            )
            .await;

        // She writes `@b`: the composer offers Bob, and Enter takes him.
        alice.type_into("#message-input", "hey @b").await;
        alice
            .wait_js(
                "the composer suggests @bob",
                STEP,
                "const list = document.getElementById('mention-suggestions');
                 return !list.hidden && list.getClientRects().length > 0
                     && [...list.querySelectorAll('[role=option]')].map(e => e.textContent).join() === '@bob';",
                vec![],
            )
            .await;
        alice.type_into("#message-input", &Key::Enter.to_string()).await;
        assert_eq!(
            alice
                .js("return [document.getElementById('message-input').value, document.getElementById('mention-suggestions').hidden]", vec![])
                .await,
            json!(["hey @bob ", true]),
            "Enter chose the name (and sent nothing)"
        );
        let text = "hey @bob look at this";
        let sent = send(alice, "look at this").await;
        expect_message(alice, "mine", "alice", text, left_of_live(sent)).await;

        // Bob, in room A: room B shows one unread, one mentioning him.
        expect_badges(bob, &room_button(ROOM_B), 1, 1, left_of_live(sent)).await;
        eprintln!("  [bob] mention badge on {ROOM_B} {:.0?} after the send", sent.elapsed());
        expect_badges(bob, &room_button(ROOM_A), 0, 0, STEP).await;
        bob.screenshot(&artifacts().join("home-mention-badge.png"))
            .await;

        // He opens room B: the message is highlighted, the badges clear.
        bob.click(&room_button(ROOM_B)).await;
        expect_open_room(bob, ROOM_B).await;
        expect_message(bob, "theirs", "alice", text, STEP).await;
        let highlighted = "return [...document.querySelectorAll('#messages div.message.mention div.text')].map(e => e.textContent)";
        assert_eq!(bob.js(highlighted, vec![]).await, json!([text]));
        assert_eq!(alice.js(highlighted, vec![]).await, json!([]), "[alice] her own message mentions someone else");
        expect_badges(bob, &room_button(ROOM_B), 0, 0, STEP).await;

        // While his tab is hidden, a mention notifies him — once, however many follow.
        bob.click(&room_button(ROOM_A)).await;
        expect_open_room(bob, ROOM_A).await;
        bob.js(FAKE_HIDDEN_WITH_NOTIFICATIONS, vec![]).await;
        alice.click(&room_button(ROOM_A)).await;
        expect_open_room(alice, ROOM_A).await;
        let first = "@Bob, are you there?";
        let sent = send(alice, first).await;
        expect_message(alice, "mine", "alice", first, left_of_live(sent)).await;
        let second = "@bob???";
        let sent = send(alice, second).await;
        expect_message(alice, "mine", "alice", second, left_of_live(sent)).await;
        expect_badges(bob, &room_button(ROOM_A), 2, 2, left_of_live(sent)).await;
        assert_eq!(
            bob.js("return window.notified", vec![]).await,
            json!([["alice mentioned you in #room-a", first]]),
            "[bob] one notification for the room"
        );

        // After a reload the badges come from the server (GET /api/subscriptions).
        bob.goto("/home").await;
        expect_home_as(bob, "bob").await;
        expect_open_room(bob, "general").await;
        expect_badges(bob, &room_button(ROOM_A), 2, 2, STEP).await;
        expect_badges(bob, &room_button(ROOM_B), 0, 0, STEP).await;
    })
    .await;
}

/// Script: the message search's results as `[room label, user, text, [marked parts]]`.
const SEARCH_HITS: &str =
    "return [...document.querySelectorAll('#search-hits button.hit')].map(h => [
    h.querySelector('.hit-room').textContent,
    h.querySelector('bdi.user').textContent,
    h.querySelector('div.text').textContent,
    [...h.querySelectorAll('div.text mark')].map(m => m.textContent)]);";

/// Searches messages with the box in the top bar (once the server finds `expect` results,
/// asked over the API first: the index may take up to a second); returns the hits shown.
async fn search_messages(b: &Browser, query: &str, expect: usize) -> Value {
    let path = format!("/api/search?q={}", urlencoding(query));
    let mut last = Value::Null;
    let found = browser_support::poll(STEP, async || {
        last = fetch_json(b, "GET", &path, Value::Null).await;
        (last[1]["results"].as_array().map(Vec::len) == Some(expect)).then_some(())
    })
    .await;
    assert!(found.is_some(), "[{}] {path} should find {expect}: {last}", b.name);
    b.clear("#message-search").await;
    b.type_into("#message-search", &format!("{query}{}", Key::Enter))
        .await;
    b.wait_js(
        &format!("the search for {query:?} shows {expect} result(s)"),
        STEP,
        &format!("const hits = (function () {{ {SEARCH_HITS} }})();
            return document.getElementById('search-title').textContent.includes('found for')
                && hits.length === arguments[0] && hits;"),
        vec![json!(expect)],
    )
    .await
}

/// `text` percent-encoded for a query string.
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_search_finds_a_url_and_an_id_marks_them_and_opens_the_room() {
    const ROOM: &str = "release-notes";
    with_two_browsers([ANN, BOB], STEP9_STORY_LIMIT, async |ann, bob| {
        two_guests_in(ann, bob, ROOM).await;
        let texts = [
            "the spec is at https://example.com/a?b=1 now",
            "fixed ABC-123 today",
            "unrelated: abc and 123 apart",
            "<img src=x onerror=alert(1)> ABC-123 again",
        ];
        for text in texts {
            let sent = send(ann, text).await;
            expect_delivered(ann, bob, text, sent).await;
        }
        bob.click(&room_button("general")).await;
        expect_open_room(bob, "general").await;

        // An id: both messages that have it, newest first, the id marked; markup stays text.
        let hits = search_messages(bob, "ABC-123", 2).await;
        assert_eq!(
            hits,
            json!([
                [format!("#{ROOM}"), ANN, texts[3], ["ABC-123"]],
                [format!("#{ROOM}"), ANN, texts[1], ["ABC-123"]],
            ]),
            "[{BOB}] the results"
        );
        assert_eq!(
            bob.js("return document.querySelectorAll('#search-panel img').length", vec![]).await,
            json!(0),
            "no <img> was made from a result"
        );

        // A URL, found whole.
        let hits = search_messages(bob, "https://example.com/a?b=1", 1).await;
        assert_eq!(hits[0][2], json!(texts[0]));
        let marked = hits[0][3].as_array().unwrap();
        assert!(
            !marked.is_empty() && marked.iter().all(|m| texts[0].contains(m.as_str().unwrap())),
            "the marks are parts of the text: {hits}"
        );
        assert!(
            marked.iter().any(|m| m.as_str().unwrap().contains("example.com")),
            "the URL is marked: {hits}"
        );
        bob.screenshot(&artifacts().join("home-search.png")).await;

        // Choosing the result opens its room with the message in view.
        bob.click("#search-hits button.hit").await;
        expect_open_room(bob, ROOM).await;
        let id = message_id(bob, texts[0]).await;
        bob.wait_js(
            "the found message is marked",
            STEP,
            "return document.querySelector(arguments[0]).classList.contains('found')
                && document.getElementById('search-panel').hidden",
            vec![json!(message_css(id))],
        )
        .await;
    })
    .await;
}

/// Waits until message `id` in `feed` (`#messages` or `#thread-messages`) shows the
/// reactions `chips` (`[emoji, count, mine]`, in order).
async fn expect_reactions(b: &Browser, feed: &str, id: u64, chips: Value, within: Duration) {
    b.wait_js(
        &format!("message {id} in {feed} shows the reactions {chips}"),
        within,
        "const m = document.querySelector(`${arguments[0]} div.message[data-id=\"${arguments[1]}\"]`);
         if (!m) return false;
         const shown = [...m.querySelectorAll('.reactions button.reaction')].map(c =>
             [c.querySelector('.emoji').textContent, Number(c.querySelector('.count').textContent), c.classList.contains('me')]);
         return JSON.stringify(shown) === JSON.stringify(arguments[2]);",
        vec![json!(feed), json!(id), chips],
    )
    .await;
}

/// Waits until the parent `id` in the main feed says `summary` under it ("" for none shown).
async fn expect_thread_summary(b: &Browser, id: u64, summary: &str, within: Duration) {
    b.wait_js(
        &format!("message {id} shows {summary:?} under it"),
        within,
        "const s = document.querySelector(`#messages div.message[data-id=\"${arguments[0]}\"] button.thread-summary`);
         if (!s) return false;
         const shown = !s.hidden && s.getClientRects().length > 0;
         return arguments[1] === '' ? !shown : shown && s.textContent.startsWith(arguments[1]);",
        vec![json!(id), json!(summary)],
    )
    .await;
}

/// Script: the thread panel's messages as `[id, side, user, text]`.
const THREAD: &str =
    "return [...document.querySelectorAll('#thread-messages div.message[data-id]')].map(m => [
    Number(m.dataset.id),
    m.classList.contains('mine') ? 'mine' : 'theirs',
    m.querySelector('.meta > bdi.user').textContent,
    m.querySelector('div.text').textContent]);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_reply_and_reactions_reach_the_other_user_live() {
    const ROOM: &str = "cake-thread";
    with_two_browsers([ANN, BOB], STEP9_STORY_LIMIT, async |ann, bob| {
        two_guests_in(ann, bob, ROOM).await;
        let parent = "Who brings the cake?";
        let sent = send(ann, parent).await;
        expect_delivered(ann, bob, parent, sent).await;
        let id = message_id(bob, parent).await;
        expect_thread_summary(ann, id, "", STEP).await;

        // Bob replies in the thread: the panel opens on the parent; the reply goes there.
        bob.click(&format!("{} button[data-action=reply]", message_css(id)))
            .await;
        bob.wait_js(
            "the thread panel shows the parent",
            STEP,
            &format!("const shown = (function () {{ {THREAD} }})();
                return shown.length === 1 && shown[0][0] === arguments[0]
                    && document.activeElement.id === 'thread-input';"),
            vec![json!(id)],
        )
        .await;
        let reply = "I will — chocolate";
        let sent = Instant::now();
        bob.type_here(&format!("{reply}{}", Key::Enter)).await;
        let thread = bob
            .wait_js(
                "the reply shows in the thread",
                STEP,
                &format!("const shown = (function () {{ {THREAD} }})();
                    return shown.length === 2 && shown;"),
                vec![],
            )
            .await;
        assert_eq!(thread[1].as_array().unwrap()[1..], [json!("mine"), json!(BOB), json!(reply)]);
        let reply_id = thread[1][0].as_u64().unwrap();

        // Ann sees "1 reply" under the parent, live; the reply is not in the main feed.
        expect_thread_summary(ann, id, "1 reply", left_of_live(sent)).await;
        eprintln!("  [{ANN}] \"1 reply\" {:.0?} after Bob's Enter", sent.elapsed());
        let texts = ann.js(FEED, vec![]).await;
        assert!(!texts.to_string().contains(reply), "[{ANN}] the reply stays in its thread: {texts}");
        expect_thread_summary(bob, id, "1 reply", STEP).await;
        ann.click(&format!("{} button.thread-summary", message_css(id)))
            .await;
        ann.wait_js(
            "Ann's thread panel shows the parent and the reply",
            STEP,
            &format!("const shown = (function () {{ {THREAD} }})();
                return JSON.stringify(shown) === JSON.stringify(arguments[0]);"),
            vec![json!([[id, "mine", ANN, parent], [reply_id, "theirs", BOB, reply]])],
        )
        .await;

        // Ann reacts with the picker; Bob sees it live and adds his by clicking the chip.
        ann.click(&format!("{} button[data-action=react]", message_css(id)))
            .await;
        let reacted = Instant::now();
        ann.click(&format!("{} .emoji-picker button[data-emoji=\"🎉\"]", message_css(id)))
            .await;
        expect_reactions(bob, "#messages", id, json!([["🎉", 1, false]]), left_of_live(reacted)).await;
        eprintln!("  [{BOB}] reaction shown {:.0?} after Ann's click", reacted.elapsed());
        expect_reactions(ann, "#messages", id, json!([["🎉", 1, true]]), STEP).await;
        expect_reactions(ann, "#thread-messages", id, json!([["🎉", 1, true]]), STEP).await;
        let chip = format!("{} button.reaction[data-emoji=\"🎉\"]", message_css(id));
        bob.click(&chip).await;
        expect_reactions(bob, "#messages", id, json!([["🎉", 2, true]]), STEP).await;
        expect_reactions(ann, "#messages", id, json!([["🎉", 2, true]]), LIVE).await;
        // A reaction on the reply, in the thread panel.
        bob.click(&format!("#thread-messages div.message[data-id=\"{reply_id}\"] button[data-action=react]"))
            .await;
        bob.click(&format!("#thread-messages div.message[data-id=\"{reply_id}\"] .emoji-picker button[data-emoji=\"👍\"]"))
            .await;
        expect_reactions(ann, "#thread-messages", reply_id, json!([["👍", 1, false]]), STEP).await;
        ann.screenshot(&artifacts().join("home-thread.png")).await;
        // Clicking one's own chip again takes it back.
        bob.click(&chip).await;
        expect_reactions(ann, "#messages", id, json!([["🎉", 1, true]]), STEP).await;

        // After a reload the counts come with the history (and which are Ann's).
        reload_into(ann, "/home", ROOM).await;
        expect_thread_summary(ann, id, "1 reply", STEP).await;
        expect_reactions(ann, "#messages", id, json!([["🎉", 1, true]]), STEP).await;
    })
    .await;
}
