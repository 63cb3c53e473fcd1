//! Roles, users, permissions (GRANT, REVOKE, LIST), identities and DESCRIBE: read and
//! classified, never evaluated, with the checks Cassandra's parser makes on them (a
//! permission the resource takes, each role option once, one way of giving a password).

use std::collections::HashSet;

use super::{Parser, Result};
use crate::cql::lexer::Token;
use crate::cql::{Action, Stmt};

/// What a GRANT, REVOKE or LIST names, for the permissions it takes.
#[derive(Clone, Copy)]
enum Resource {
    Keyspaces,
    Table,
    Roles,
    Role,
    Functions,
    Function,
    Mbeans,
}

impl Resource {
    /// The permissions that apply to the resource.
    fn applicable(self) -> &'static [&'static str] {
        match self {
            Resource::Keyspaces => &[
                "create",
                "alter",
                "drop",
                "select",
                "modify",
                "authorize",
                "unmask",
                "select_masked",
            ],
            Resource::Table => &[
                "alter",
                "drop",
                "select",
                "modify",
                "authorize",
                "unmask",
                "select_masked",
            ],
            Resource::Roles => &["create", "alter", "drop", "authorize", "describe"],
            Resource::Role => &["alter", "drop", "authorize"],
            Resource::Functions => &["create", "alter", "drop", "authorize", "execute"],
            Resource::Function => &["alter", "drop", "authorize", "execute"],
            Resource::Mbeans => &["authorize", "describe", "execute", "modify", "select"],
        }
    }
}

/// The permissions a statement may name.
const PERMISSIONS: [&str; 10] = [
    "create",
    "alter",
    "drop",
    "select",
    "modify",
    "authorize",
    "describe",
    "execute",
    "unmask",
    "select_masked",
];

impl Parser<'_> {
    /// `roleOptions`: options joined by AND, each at most once, the password given one way.
    pub(super) fn role_options(&mut self) -> Result<()> {
        let mut seen = HashSet::new();
        loop {
            let option = if self.eat_kw("password") {
                self.expect_p("=")?;
                self.string()?;
                "password"
            } else if self.eat_kw("generated") {
                self.expect_kw("password")?;
                "generated password"
            } else if self.eat_kw("hashed") {
                self.expect_kw("password")?;
                self.expect_p("=")?;
                self.string()?;
                "hashed password"
            } else if self.eat_kw("options") {
                self.expect_p("=")?;
                self.property_map()?;
                "options"
            } else if self.at_kw("superuser") || self.at_kw("login") {
                let option = match self.eat_kw("superuser") {
                    true => "superuser",
                    false => {
                        self.pos += 1;
                        "login"
                    }
                };
                self.expect_p("=")?;
                match self.advance()? {
                    Token::Boolean(_) => option,
                    _ => {
                        self.pos -= 1;
                        return Err(self.expected("true or false"));
                    }
                }
            } else if self.eat_kw("access") {
                let from = match self.eat_kw("to") {
                    true => false,
                    false => {
                        self.expect_kw("from")?;
                        true
                    }
                };
                let all = self.eat_kw("all");
                self.expect_kw(if from { "cidrs" } else { "datacenters" })?;
                if !all {
                    self.expect_p("{")?;
                    self.string()?;
                    while self.eat_p(",") {
                        self.string()?;
                    }
                    self.expect_p("}")?;
                }
                if from {
                    "access from cidrs"
                } else {
                    "access to datacenters"
                }
            } else {
                return Err(self.expected("a role option"));
            };
            if !seen.insert(option) && !option.starts_with("access") {
                self.recognize(format!("Multiple definition for role option '{option}'"));
            }
            if !self.eat_kw("and") {
                break;
            }
        }
        self.passwords_exclusive(&seen);
        Ok(())
    }

    /// Refuses a password given in more than one way.
    fn passwords_exclusive(&mut self, seen: &HashSet<&str>) {
        let ways = ["password", "hashed password", "generated password"]
            .iter()
            .filter(|w| seen.contains(*w))
            .count();
        if ways > 1 {
            self.recognize("Options of the password are mutually exclusive".into());
        }
    }

    /// `username [WITH password] [SUPERUSER | NOSUPERUSER]` of CREATE and ALTER USER.
    pub(super) fn user_options(&mut self) -> Result<()> {
        self.plain_name("user names")?;
        if self.eat_kw("with") {
            if self.eat_kw("hashed") {
                self.expect_kw("password")?;
                self.string()?;
            } else if self.eat_kw("generated") {
                self.expect_kw("password")?;
            } else {
                self.expect_kw("password")?;
                self.string()?;
            }
        }
        let _ = self.eat_kw("superuser") || self.eat_kw("nosuperuser");
        Ok(())
    }

    /// GRANT or REVOKE, of permissions on a resource or of a role.
    pub(super) fn grant_or_revoke(&mut self) -> Result<Stmt> {
        let grant = self.eat_kw("grant");
        if !grant {
            self.expect_kw("revoke")?;
        }
        let to = if grant { "to" } else { "from" };
        let permissions = self.attempt(|p| {
            let permissions = p.permissions()?;
            p.expect_kw("on")?;
            let resource = p.resource()?;
            p.expect_kw(to)?;
            Ok((permissions, resource))
        });
        if let Some((permissions, resource)) = permissions {
            self.role_name()?;
            let applicable = resource.applicable();
            if !permissions.iter().any(|p| applicable.contains(p)) {
                self.recognize(
                    "Resource type does not support any of the requested permissions".into(),
                );
            }
            let action = match grant {
                true => Action::GrantPermission,
                false => Action::RevokePermission,
            };
            return Ok(Self::other(action, None));
        }
        self.role_name()?;
        self.expect_kw(to)?;
        self.role_name()?;
        let action = match grant {
            true => Action::GrantRole,
            false => Action::RevokeRole,
        };
        Ok(Self::other(action, None))
    }

    /// `permissionOrAll`: the permissions named.
    fn permissions(&mut self) -> Result<Vec<&'static str>> {
        if self.eat_kw("all") {
            self.eat_kw("permissions");
            return Ok(PERMISSIONS.to_vec());
        }
        let mut permissions = Vec::new();
        loop {
            let permission = PERMISSIONS
                .into_iter()
                .find(|p| self.at_kw(p))
                .ok_or_else(|| self.expected("a permission"))?;
            self.pos += 1;
            self.eat_kw("permission");
            permissions.push(permission);
            if !self.eat_p(",") {
                return Ok(permissions);
            }
        }
    }

    /// `resource`: data, roles, functions or MBeans.
    fn resource(&mut self) -> Result<Resource> {
        if self.at_kw("all") {
            let all = self.attempt(|p| {
                p.pos += 1;
                if p.eat_kw("keyspaces") {
                    return Ok(Resource::Keyspaces);
                }
                if p.eat_kw("roles") {
                    return Ok(Resource::Roles);
                }
                if p.eat_kw("mbeans") {
                    return Ok(Resource::Mbeans);
                }
                if p.eat_kw("tables") {
                    p.expect_kw("in")?;
                    p.expect_kw("keyspace")?;
                    p.keyspace_name()?;
                    return Ok(Resource::Keyspaces);
                }
                p.expect_kw("functions")?;
                if p.eat_kw("in") {
                    p.expect_kw("keyspace")?;
                    p.keyspace_name()?;
                }
                Ok(Resource::Functions)
            });
            if let Some(resource) = all {
                return Ok(resource);
            }
        }
        if self.eat_kw("keyspace") {
            self.keyspace_name()?;
            return Ok(Resource::Keyspaces);
        }
        if self.at_kw("role") {
            if let Some(()) = self.attempt(|p| {
                p.pos += 1;
                p.role_name()
            }) {
                return Ok(Resource::Role);
            }
        }
        if self.at_kw("function") {
            let function = self.attempt(|p| {
                p.pos += 1;
                p.function_name()?;
                p.argument_types()
            });
            if function.is_some() {
                return Ok(Resource::Function);
            }
        }
        if (self.at_kw("mbean") || self.at_kw("mbeans"))
            && matches!(self.peek_at(1), Some(Token::Str(_)))
        {
            self.pos += 2;
            return Ok(Resource::Mbeans);
        }
        self.eat_kw("table");
        self.table_name()?;
        Ok(Resource::Table)
    }

    pub(super) fn list(&mut self) -> Result<Stmt> {
        self.expect_kw("list")?;
        if self.eat_kw("users") {
            return Ok(Self::other(Action::ListUsers, None));
        }
        if self.eat_kw("superusers") {
            return Ok(Self::other(Action::ListSuperusers, None));
        }
        if self.eat_kw("roles") {
            if self.eat_kw("of") {
                self.role_name()?;
            }
            self.eat_kw("norecursive");
            return Ok(Self::other(Action::ListRoles, None));
        }
        self.permissions()?;
        if self.eat_kw("on") {
            self.resource()?;
        }
        if self.eat_kw("of") {
            self.role_name()?;
        }
        self.eat_kw("norecursive");
        Ok(Self::other(Action::ListPermissions, None))
    }

    pub(super) fn describe(&mut self) -> Result<Stmt> {
        self.pos += 1;
        let listing = [
            "cluster",
            "keyspaces",
            "tables",
            "types",
            "functions",
            "aggregates",
        ]
        .into_iter()
        .any(|k| self.eat_kw(k));
        if !listing {
            self.describe_one()?;
        }
        if self.eat_kw("with") {
            self.expect_kw("internals")?;
        }
        Ok(Self::other(Action::Describe, None))
    }

    /// What DESCRIBE describes, other than a listing.
    fn describe_one(&mut self) -> Result<()> {
        if self.eat_kw("full") {
            self.expect_kw("schema")?;
        } else if self.kw_at(0, "schema") {
            self.pos += 1;
        } else if self.eat_kw("only") {
            self.expect_kw("keyspace")?;
            self.optional_keyspace()?;
        } else if self.eat_kw("keyspace") {
            self.optional_keyspace()?;
        } else if self.eat_kw("table") || self.eat_kw("index") {
            self.table_name()?;
        } else if self.eat_kw("materialized") {
            self.expect_kw("view")?;
            self.table_name()?;
        } else if self.at_kw("type") && !self.p_at(1, ".") && self.peek_at(1).is_some() {
            let typed = self.attempt(|p| {
                p.pos += 1;
                p.user_type_name()
            });
            if typed.is_none() {
                self.table_name()?;
            }
        } else if (self.at_kw("function") || self.at_kw("aggregate")) && !self.p_at(1, ".") {
            let named = self.attempt(|p| {
                p.pos += 1;
                p.function_name()
            });
            if named.is_none() {
                self.table_name()?;
            }
        } else {
            self.table_name()?;
        }
        Ok(())
    }

    /// The keyspace DESCRIBE KEYSPACE may name.
    fn optional_keyspace(&mut self) -> Result<()> {
        if matches!(self.peek(), Some(Token::Word(_) | Token::Quoted(_))) && !self.at_kw("with") {
            self.keyspace_name()?;
        }
        Ok(())
    }

    /// `ADD IDENTITY [IF NOT EXISTS] identity TO ROLE role`.
    pub(super) fn add_identity(&mut self) -> Result<Stmt> {
        self.expect_kw("add")?;
        self.expect_kw("identity")?;
        self.if_not_exists()?;
        self.plain_name("identity")?;
        self.expect_kw("to")?;
        self.expect_kw("role")?;
        self.plain_name("identity")?;
        Ok(Self::other(Action::AddIdentity, None))
    }
}
