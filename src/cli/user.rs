//! `keygate user …`

use std::io::{BufRead as _, IsTerminal as _};

use super::{Failure, from_auth};
use crate::auth::{Actor, Auth, Registration, UserPatch};
use crate::clock::rfc3339;
use crate::domain::ClientInfo;
use crate::store::UserRecord;

/// `keygate user …`
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user (the password comes from a prompt, or stdin with --password-stdin).
    Add {
        /// Email address.
        email: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Username.
        #[arg(long)]
        username: Option<String>,
        /// A role (repeat for several).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List every user.
    List,
    /// Show one user.
    Show {
        /// User id, email or username.
        user: String,
    },
    /// Disable a user and end their sessions.
    Disable {
        /// User id, email or username.
        user: String,
    },
    /// Enable a user.
    Enable {
        /// User id, email or username.
        user: String,
    },
    /// Replace a user's roles (none clears them).
    SetRoles {
        /// User id, email or username.
        user: String,
        /// The roles.
        roles: Vec<String>,
    },
    /// Delete a user and their sessions.
    Delete {
        /// User id, email or username.
        user: String,
    },
    /// Set a new password and end every session of the user.
    ResetPassword {
        /// User id, email or username.
        user: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Turn two-factor authentication off (the user can log in with the password alone).
    ResetMfa {
        /// User id, email or username.
        user: String,
    },
    /// Mark the user's email address verified.
    VerifyEmail {
        /// User id, email or username.
        user: String,
    },
}

/// Reads a password: one line of stdin (trailing newline stripped) or a hidden prompt.
pub(super) fn read_password(from_stdin: bool) -> Result<String, Failure> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::Runtime(format!("cannot read the password from stdin: {e}")))?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        return Ok(password.strip_suffix('\r').unwrap_or(password).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(
            "no terminal to prompt for the password: pass --password-stdin and pipe it in"
                .to_owned(),
        ));
    }
    let first = rpassword::prompt_password("Password: ")
        .map_err(|e| Failure::Runtime(format!("cannot read the password: {e}")))?;
    let second = rpassword::prompt_password("Repeat password: ")
        .map_err(|e| Failure::Runtime(format!("cannot read the password: {e}")))?;
    if first != second {
        return Err(Failure::Usage(
            "the two passwords differ: run the command again".to_owned(),
        ));
    }
    Ok(first)
}

pub(super) fn describe(u: &UserRecord) -> String {
    format!(
        "id: {}\nemail: {}\nusername: {}\nname: {}\nroles: {}\npermissions: {}\nactive: {}\nemail_verified: {}\nmfa_enabled: {}\ncreated_at: {}\nupdated_at: {}",
        u.id,
        u.email,
        u.username.as_deref().unwrap_or("-"),
        u.name.as_deref().unwrap_or("-"),
        u.roles.join(","),
        u.permissions.join(","),
        u.is_active,
        u.email_verified,
        u.mfa_enabled,
        rfc3339(u.created_at),
        rfc3339(u.updated_at),
    )
}

pub(super) async fn run(cmd: UserCommand, auth: &Auth) -> Result<(), Failure> {
    let operator = ClientInfo {
        ip: None,
        user_agent: Some("keygate-cli".to_owned()),
    };
    match cmd {
        UserCommand::Add {
            email,
            name,
            username,
            roles,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let user = auth
                .admin_create_user(
                    Registration {
                        email: Some(email),
                        password: Some(password),
                        name,
                        username,
                    },
                    roles,
                    Vec::new(),
                    &operator,
                )
                .await
                .map_err(from_auth)?;
            println!("created user {} <{}>", user.id, user.email);
        }
        UserCommand::List => {
            let mut cursor = None;
            println!(
                "{:<36}  {:<32}  {:<16}  {:<6}  roles",
                "id", "email", "username", "active"
            );
            loop {
                let page = auth
                    .list_users(None, Some(200), cursor.as_deref())
                    .await
                    .map_err(from_auth)?;
                for u in &page.items {
                    println!(
                        "{:<36}  {:<32}  {:<16}  {:<6}  {}",
                        u.id,
                        u.email,
                        u.username.as_deref().unwrap_or("-"),
                        u.is_active,
                        u.roles.join(",")
                    );
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        UserCommand::Show { user } => {
            let u = auth
                .find_user(&user)
                .await
                .map_err(|e| not_found(e, &user))?;
            println!("{}", describe(&u));
        }
        UserCommand::Disable { user } => set_active(auth, &user, false, &operator).await?,
        UserCommand::Enable { user } => set_active(auth, &user, true, &operator).await?,
        UserCommand::SetRoles { user, roles } => {
            let u = auth
                .find_user(&user)
                .await
                .map_err(|e| not_found(e, &user))?;
            let patch = UserPatch {
                roles: Some(roles),
                ..Default::default()
            };
            let u = auth
                .update_user(Actor::Operator, &u.id.to_string(), patch, &operator)
                .await
                .map_err(from_auth)?;
            println!("roles of {} <{}>: {}", u.id, u.email, u.roles.join(","));
        }
        UserCommand::Delete { user } => {
            let u = auth
                .find_user(&user)
                .await
                .map_err(|e| not_found(e, &user))?;
            auth.delete_user(Actor::Operator, &u.id.to_string(), &operator)
                .await
                .map_err(from_auth)?;
            println!("deleted user {} <{}>", u.id, u.email);
        }
        UserCommand::ResetPassword {
            user,
            password_stdin,
        } => {
            let u = auth
                .find_user(&user)
                .await
                .map_err(|e| not_found(e, &user))?;
            let password = read_password(password_stdin)?;
            auth.reset_password(&u.id.to_string(), &password, &operator)
                .await
                .map_err(from_auth)?;
            println!(
                "password of {} <{}> reset; every session ended",
                u.id, u.email
            );
        }
        UserCommand::ResetMfa { user } => {
            let u = auth
                .find_user(&user)
                .await
                .map_err(|e| not_found(e, &user))?;
            let had = auth
                .reset_mfa(Actor::Operator, &u, &operator)
                .await
                .map_err(from_auth)?;
            if had {
                println!(
                    "two-factor authentication of {} <{}> turned off",
                    u.id, u.email
                );
            } else {
                println!(
                    "{} <{}> had no two-factor authentication; nothing changed",
                    u.id, u.email
                );
            }
        }
        UserCommand::VerifyEmail { user } => {
            let u = auth
                .mark_email_verified(&user, &operator)
                .await
                .map_err(|e| not_found(e, &user))?;
            println!("email address of {} <{}> marked verified", u.id, u.email);
        }
    }
    Ok(())
}

async fn set_active(
    auth: &Auth,
    user: &str,
    active: bool,
    operator: &ClientInfo,
) -> Result<(), Failure> {
    let u = auth.find_user(user).await.map_err(|e| not_found(e, user))?;
    let patch = UserPatch {
        is_active: Some(active),
        ..Default::default()
    };
    let u = auth
        .update_user(Actor::Operator, &u.id.to_string(), patch, operator)
        .await
        .map_err(from_auth)?;
    if active {
        println!("enabled {} <{}>", u.id, u.email);
    } else {
        println!("disabled {} <{}>; their sessions ended", u.id, u.email);
    }
    Ok(())
}

/// "No such user" names what was looked for and how to find the right one.
pub(super) fn not_found(e: crate::auth::AuthError, what: &str) -> Failure {
    match e {
        crate::auth::AuthError::NotFound => Failure::Runtime(format!(
            "no user with id, email or username `{what}`: see `keygate user list`"
        )),
        other => from_auth(other),
    }
}
