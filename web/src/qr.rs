//! QR codes of invite links, as SVG (the `qrcode` crate). The code encodes the link, which holds the join
//! code: a phone's camera opens the friend's own dashboard with the code filled in.

use crate::api::ApiError;
use qrcode::QrCode;
use qrcode::render::svg;

/// The SVG of a QR code that encodes `text`.
pub fn svg(text: &str) -> Result<String, ApiError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| ApiError::with_status(500, format!("cannot draw the QR code: {e}")))?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_a_long_link() {
        let link = format!("http://127.0.0.1:8080/join#{}", "A1".repeat(200));
        let s = super::svg(&link).unwrap();
        assert!(s.starts_with("<?xml") && s.contains("<svg"), "{}", &s[..80]);
    }
}
