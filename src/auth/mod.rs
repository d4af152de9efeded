//! Who a request is: identities olive can verify on its own, without asking Django.

pub mod django_session;
