//! STUB until the real module lands.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub panaya_username: String,
    pub panaya_token: String,
    pub papaya_api_key: String,
    pub papaya_client_secret: String,
    pub apinizer_client_id: String,
    pub apinizer_client_secret: String,
    pub patchworks_email: String,
    pub patchworks_password: String,
    pub onlyoffice_username: String,
    pub onlyoffice_password: String,
    pub oauth2_client_id: String,
    pub oauth2_client_secret: String,
}
impl Credentials {
    pub fn demo() -> Credentials {
        todo!()
    }
}
#[derive(Clone, Debug, Default)]
pub struct EndpointOptions {
    pub x: u8,
}
pub struct TokenEndpoint;
impl TokenEndpoint {
    pub async fn start(_o: EndpointOptions) -> std::io::Result<TokenEndpoint> {
        todo!()
    }
    pub fn base_url(&self) -> String {
        todo!()
    }
    pub async fn shutdown(self) {}
}
