//! `/signin`: where a person pastes an API token to use a Weft that needs one.
//!
//! A plain form posting to `/auth/signin`, so it works without JavaScript; the server
//! keeps the token in an HttpOnly session cookie and goes on to the page that sent the
//! person here (`?next=`).

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// `/signin`.
#[component]
pub fn SignInPage() -> impl IntoView {
    let query = use_query_map();
    let next = move || query.with(|q| q.get("next").unwrap_or_else(|| "/".to_owned()));
    let refused = move || query.with(|q| q.get("error").is_some());
    view! {
        <section class="signin" data-testid="signin">
            <h1>"Sign in"</h1>
            <p>
                "This Weft needs an API token. An admin makes one with "
                <code>"weft-server token create --name you"</code> "."
            </p>
            <Show when=refused>
                <p class="error-banner" data-testid="signin-error">"That token is not valid, or was revoked."</p>
            </Show>
            <form method="post" action="/auth/signin" class="signin-form">
                <input type="hidden" name="next" value=next/>
                <label class="field">
                    <span>"API token"</span>
                    <input type="password" name="token" required autocomplete="off" data-testid="token"
                        placeholder="weft_…"/>
                </label>
                <button type="submit" data-testid="signin-submit">"Sign in"</button>
            </form>
        </section>
    }
}

/// Who is signed in, with a way out; nothing while Weft runs open.
#[component]
pub fn SessionBadge() -> impl IntoView {
    let session = Resource::new(|| (), |()| crate::api::session());
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                match session.await {
                    Ok(session) => session.name.map(|name| view! {
                        <span class="session" data-testid="session">
                            <span class="who">{name}</span>
                            <form method="post" action="/auth/signout" class="signout">
                                <button type="submit" class="secondary" data-testid="signout">"Sign out"</button>
                            </form>
                        </span>
                    }),
                    Err(_) => None,
                }
            })}
        </Suspense>
    }
}
