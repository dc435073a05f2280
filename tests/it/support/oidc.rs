//! STUB until the harness lands.
pub const BASIC_CLIENT_ID: &str = "";
pub const BASIC_CLIENT_SECRET: &str = "";
pub const POST_CLIENT_ID: &str = "";
pub const POST_CLIENT_SECRET: &str = "";
pub struct OidcProvider;
impl OidcProvider {
    pub fn start(_ttl: u64) -> Option<OidcProvider> {
        None
    }
    pub fn token_endpoint(&self) -> String {
        String::new()
    }
    pub async fn introspect(&self, _token: &str) -> bool {
        false
    }
}
