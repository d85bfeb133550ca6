//! What a probe found by trying the gateway as an attacker and as new users
//! would (issue 12): each test here failed on the code before its fix.

mod availability;
mod security;
