//! The admin API: role guard, users, sessions, audit; and the audit log holding no secret.

use keygate::auth::Registration;
use keygate::domain::{ClientInfo, UserId};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, Tokens, assert_error, claims_of, tokens};

/// Creates `email` with `roles` through the use case (as the CLI does) and logs in.
pub(crate) async fn make_user(app: &TestApp, email: &str, roles: &[&str]) -> Tokens {
    app.state
        .auth
        .admin_create_user(
            Registration {
                email: Some(email.to_owned()),
                password: Some(PASSWORD.to_owned()),
                ..Default::default()
            },
            roles.iter().map(|r| (*r).to_owned()).collect(),
            vec![],
            &ClientInfo::default(),
        )
        .await
        .expect("create user");
    app.login(email).await
}

pub(crate) async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

fn admin_app_config() -> &'static str {
    "rate_limits.login = \"1000/1m\"\nrate_limits.register = \"1000/1m\""
}

/// Every `/admin` route of the router and every method it answers (read from the router
/// itself, so a new admin route without the guard fails here): 401 without a token, 403
/// `forbidden` with a user's token (issue 27, point 11). On both backends.
#[tokio::test]
async fn every_admin_route_refuses_non_admins() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let user = app.user("ada@example.com").await;
    let id = claims_of(&user.access)["sub"].as_str().unwrap().to_owned();
    let mut checked = 0;
    for (route, methods) in crate::helpers::routes(&app).await {
        if !route.starts_with("/admin") {
            continue;
        }
        // The user's own id where a route takes one: the guard, not a missing user, refuses.
        let path = crate::helpers::concrete_path(&route)
            .replace("0190b6e2-8d4c-7a8e-9f3a-1c2d3e4f5a6b", &id);
        for method in methods {
            let r = app
                .client
                .request(method.parse().unwrap(), app.url(&path))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{method} {path} without a token");
            assert_error(r, 401, "invalid_token").await;
            let r = send(&app, method, &path, &user.access, Some(json!({}))).await;
            assert_eq!(r.status(), 403, "{method} {path} with a user's token");
            assert_error(r, 403, "forbidden").await;
            checked += 1;
        }
    }
    // users, a user, its sessions and two-factor, audit, keys: more than the first list had.
    assert!(checked >= 12, "{checked} admin operations");
}

#[tokio::test]
async fn admins_create_list_filter_and_page_users() {
    let Some(app) = TestApp::spawn_with(admin_app_config()).await else {
        return;
    };
    let admin = make_user(&app, "root@example.com", &["admin"]).await;
    for i in 0..5 {
        let r = send(
            &app,
            "POST",
            "/admin/users",
            &admin.access,
            Some(json!({"email": format!("user{i}@example.com"), "password": PASSWORD,
                        "roles": ["support"], "permissions": ["users:read"], "name": format!("User {i}")})),
        )
        .await;
        assert_eq!(r.status(), 201);
        let user: Value = r.json().await.unwrap();
        assert_eq!(user["roles"], json!(["support"]));
        assert_eq!(user["permissions"], json!(["users:read"]));
    }
    let r = send(
        &app,
        "POST",
        "/admin/users",
        &admin.access,
        Some(json!({"email": "x@example.com", "password": "password"})),
    )
    .await;
    assert_error(r, 422, "validation_failed").await;
    let r = send(
        &app,
        "POST",
        "/admin/users",
        &admin.access,
        Some(json!({"email": "y@example.com", "password": PASSWORD, "roles": ["Not Valid"]})),
    )
    .await;
    let body = assert_error(r, 422, "validation_failed").await;
    assert!(body["fields"]["roles"].is_string());

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/admin/users?limit=2".to_owned(),
            Some(c) => format!("/admin/users?limit=2&cursor={c}"),
        };
        let page: Value = send(&app, "GET", &path, &admin.access, None)
            .await
            .json()
            .await
            .unwrap();
        let users = page["users"].as_array().unwrap();
        assert!(users.len() <= 2);
        seen.extend(
            users
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(seen[0], "root@example.com", "creation order");
    let page: Value = send(
        &app,
        "GET",
        "/admin/users?email=USER3@example.com",
        &admin.access,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    assert_eq!(page["users"][0]["name"], "User 3");
    assert_error(
        send(&app, "GET", "/admin/users?limit=0", &admin.access, None).await,
        422,
        "validation_failed",
    )
    .await;
    for bad in ["abc", "", "201", "-1"] {
        assert_error(
            send(
                &app,
                "GET",
                &format!("/admin/users?limit={bad}"),
                &admin.access,
                None,
            )
            .await,
            422,
            "validation_failed",
        )
        .await;
    }
    assert_error(
        send(&app, "GET", "/admin/users?cursor=nope", &admin.access, None).await,
        422,
        "validation_failed",
    )
    .await;
    assert_error(
        send(&app, "GET", "/admin/users/not-an-id", &admin.access, None).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn roles_and_permissions_set_by_an_admin_are_in_the_next_tokens() {
    let Some(app) = TestApp::spawn_with(admin_app_config()).await else {
        return;
    };
    let admin = make_user(&app, "root@example.com", &["admin"]).await;
    let user = app.user("ada@example.com").await;
    let id = claims_of(&user.access)["sub"].as_str().unwrap().to_owned();
    let r = send(
        &app,
        "PATCH",
        &format!("/admin/users/{id}"),
        &admin.access,
        Some(json!({"roles": ["editor", "admin"], "permissions": ["posts:write"], "name": "Ada"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let fresh = app.login("ada@example.com").await;
    let c = claims_of(&fresh.access);
    assert_eq!(c["roles"], json!(["editor", "admin"]));
    assert_eq!(c["permissions"], json!(["posts:write"]));
    // The new admin can use the admin API at once, with a token issued before the change too.
    assert_eq!(
        send(&app, "GET", "/admin/users", &user.access, None)
            .await
            .status(),
        200
    );
    // And removing the role takes effect at once for admin routes.
    send(
        &app,
        "PATCH",
        &format!("/admin/users/{id}"),
        &admin.access,
        Some(json!({"roles": []})),
    )
    .await;
    assert_error(
        send(&app, "GET", "/admin/users", &fresh.access, None).await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_at_once() {
    let Some(app) = TestApp::spawn_with(admin_app_config()).await else {
        return;
    };
    let admin = make_user(&app, "root@example.com", &["admin"]).await;
    let user = app.user("ada@example.com").await;
    let id = claims_of(&user.access)["sub"].as_str().unwrap().to_owned();
    let r = send(
        &app,
        "PATCH",
        &format!("/admin/users/{id}"),
        &admin.access,
        Some(json!({"is_active": false})),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["is_active"], false);
    assert_eq!(app.me_status(&user.access).await, 401);
    assert_eq!(app.refresh(&user.refresh).await.status(), 401);
    assert_error(
        app.login_response("ada@example.com", PASSWORD).await,
        403,
        "account_disabled",
    )
    .await;
    let events: Value = send(
        &app,
        "GET",
        &format!("/admin/audit?user_id={id}&event=user_disabled"),
        &admin.access,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(events["events"].as_array().unwrap().len(), 1);
    send(
        &app,
        "PATCH",
        &format!("/admin/users/{id}"),
        &admin.access,
        Some(json!({"is_active": true})),
    )
    .await;
    assert_eq!(
        app.login_response("ada@example.com", PASSWORD)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn deleting_a_user_ends_their_sessions_and_removes_them() {
    let Some(app) = TestApp::spawn_with(admin_app_config()).await else {
        return;
    };
    let admin = make_user(&app, "root@example.com", &["admin"]).await;
    let user = app.user("ada@example.com").await;
    let id = claims_of(&user.access)["sub"].as_str().unwrap().to_owned();
    assert_eq!(
        send(
            &app,
            "DELETE",
            &format!("/admin/users/{id}"),
            &admin.access,
            None
        )
        .await
        .status(),
        204
    );
    assert_error(
        send(
            &app,
            "GET",
            &format!("/admin/users/{id}"),
            &admin.access,
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(app.me_status(&user.access).await, 401);
    assert_eq!(app.refresh(&user.refresh).await.status(), 401);
    assert_error(
        app.login_response("ada@example.com", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        app.state
            .auth
            .store()
            .table_counts()
            .await
            .unwrap()
            .sessions,
        1,
        "only the admin's"
    );
    assert_error(
        send(
            &app,
            "DELETE",
            &format!("/admin/users/{id}"),
            &admin.access,
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn admins_list_and_end_a_users_sessions() {
    let Some(app) = TestApp::spawn_with(admin_app_config()).await else {
        return;
    };
    let admin = make_user(&app, "root@example.com", &["admin"]).await;
    let a = app.user("ada@example.com").await;
    let b = app.login("ada@example.com").await;
    let id = claims_of(&a.access)["sub"].as_str().unwrap().to_owned();
    let list: Value = send(
        &app,
        "GET",
        &format!("/admin/users/{id}/sessions"),
        &admin.access,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(
        send(
            &app,
            "DELETE",
            &format!("/admin/users/{id}/sessions"),
            &admin.access,
            None
        )
        .await
        .status(),
        204
    );
    assert_eq!(app.me_status(&a.access).await, 401);
    assert_eq!(app.me_status(&b.access).await, 401);
    assert_eq!(app.me_status(&admin.access).await, 200);
}

#[tokio::test]
async fn admins_cannot_remove_their_own_admin_role_or_lock_themselves_out() {
    let Some(app) = TestApp::spawn_with(admin_app_config()).await else {
        return;
    };
    let first = make_user(&app, "root@example.com", &["admin"]).await;
    let second = make_user(&app, "second@example.com", &["admin"]).await;
    let first_id = claims_of(&first.access)["sub"].as_str().unwrap().to_owned();
    let path = format!("/admin/users/{first_id}");
    for body in [
        json!({"roles": []}),
        json!({"roles": ["support"]}),
        json!({"is_active": false}),
    ] {
        let r = send(&app, "PATCH", &path, &first.access, Some(body)).await;
        let e = assert_error(r, 403, "forbidden").await;
        assert!(
            e["message"].as_str().unwrap().contains("yourself")
                || e["message"].as_str().unwrap().contains("own")
        );
    }
    assert_error(
        send(&app, "DELETE", &path, &first.access, None).await,
        403,
        "forbidden",
    )
    .await;
    // Keeping the admin role while changing others is fine.
    let r = send(
        &app,
        "PATCH",
        &path,
        &first.access,
        Some(json!({"roles": ["admin", "support"]})),
    )
    .await;
    assert_eq!(r.status(), 200);
    // Another administrator may demote them.
    let r = send(
        &app,
        "PATCH",
        &path,
        &second.access,
        Some(json!({"roles": []})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_error(
        send(&app, "GET", "/admin/users", &first.access, None).await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn the_audit_log_filters_pages_and_never_holds_a_secret() {
    let Some(app) = TestApp::spawn_with(&format!(
        "{}\nrefresh_reuse_grace = \"0\"",
        admin_app_config()
    ))
    .await
    else {
        return;
    };
    let admin = make_user(&app, "root@example.com", &["admin"]).await;
    // A whole flow: register, failed login, login, refresh, reuse, logout, password change.
    app.register("ada@example.com").await;
    assert_eq!(
        app.login_response("ada@example.com", "wrong password!")
            .await
            .status(),
        401
    );
    let first = app.login("ada@example.com").await;
    let second = tokens(app.refresh(&first.refresh).await.json().await.unwrap());
    assert_eq!(app.refresh(&first.refresh).await.status(), 401, "reuse");
    let third = app.login("ada@example.com").await;
    app.client
        .post(app.url("/auth/logout"))
        .bearer_auth(&third.access)
        .send()
        .await
        .unwrap();
    let fourth = app.login("ada@example.com").await;
    let r = app
        .client
        .post(app.url("/auth/password"))
        .bearer_auth(&fourth.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "the new secret passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let id = UserId::parse(claims_of(&first.access)["sub"].as_str().unwrap()).unwrap();
    let hash = app
        .state
        .auth
        .store()
        .password_hash(id)
        .await
        .unwrap()
        .unwrap();

    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/admin/audit?limit=3".to_owned(),
            Some(c) => format!("/admin/audit?limit=3&cursor={c}"),
        };
        let page: Value = send(&app, "GET", &path, &admin.access, None)
            .await
            .json()
            .await
            .unwrap();
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in [
        "user_created",
        "login_failed",
        "login_succeeded",
        "refresh_succeeded",
        "refresh_token_reused",
        "logout",
        "password_changed",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no duplicates across pages"
    );
    let reused: Value = send(
        &app,
        "GET",
        "/admin/audit?event=refresh_token_reused",
        &admin.access,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(reused["events"][0]["session_id"], first.session_id.as_str());
    assert_eq!(reused["events"][0]["outcome"], "failure");

    let everything = serde_json::to_string(&events).unwrap();
    let secrets = [
        PASSWORD,
        "wrong password!",
        "the new secret passphrase",
        hash.phc(),
        &first.access,
        &first.refresh,
        &second.refresh,
        &third.refresh,
        first.refresh.split('.').nth(1).unwrap(),
    ];
    for secret in secrets {
        assert!(
            !everything.contains(secret),
            "a secret leaked into the audit log"
        );
    }
    // The signature part of an access token alone must not appear either.
    assert!(!everything.contains(first.access.rsplit('.').next().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_administrators_removing_each_other_at_once_always_leave_one() {
    let Some(app) = TestApp::spawn_with(admin_app_config()).await else {
        return;
    };
    let app = std::sync::Arc::new(app);
    let operator = keygate::auth::Actor::Operator;
    let removals: [(&str, Option<Value>); 4] = [
        ("PATCH", Some(json!({"roles": []}))),
        ("PATCH", Some(json!({"is_active": false}))),
        ("DELETE", None),
        (
            "PATCH",
            Some(json!({"roles": ["support"], "is_active": false})),
        ),
    ];
    for round in 0..24 {
        // Two administrators, and no other.
        for user in active_admins(&app).await {
            let change = keygate::auth::UserPatch {
                roles: Some(vec![]),
                ..Default::default()
            };
            let id = user.id.to_string();
            let client = ClientInfo::default();
            app.state
                .auth
                .update_user(operator, &id, change, &client)
                .await
                .expect("operator demotes");
        }
        let a = make_user(&app, &format!("a{round}@example.com"), &["admin"]).await;
        let b = make_user(&app, &format!("b{round}@example.com"), &["admin"]).await;
        let (method, body) = removals[round % removals.len()].clone();
        let attack = |by: Tokens, target: Tokens| {
            let app = app.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let id = claims_of(&target.access)["sub"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                send(
                    &app,
                    method,
                    &format!("/admin/users/{id}"),
                    &by.access,
                    body,
                )
                .await
                .status()
            })
        };
        let (x, y) = tokio::join!(attack(a.clone(), b.clone()), attack(b, a));
        let statuses = [x.unwrap(), y.unwrap()];
        let left = active_admins(&app).await;
        assert_eq!(left.len(), 1, "round {round} ({method}): {statuses:?}");
        assert_eq!(
            statuses.iter().filter(|s| s.is_success()).count(),
            1,
            "round {round}: {statuses:?}"
        );
    }
}

async fn active_admins(app: &TestApp) -> Vec<keygate::store::UserRecord> {
    let page = app
        .state
        .auth
        .list_users(None, Some(200), None)
        .await
        .expect("list");
    assert!(page.next_cursor.is_none());
    page.items
        .into_iter()
        .filter(|u| u.is_active && u.roles.iter().any(|r| r == "admin"))
        .collect()
}
