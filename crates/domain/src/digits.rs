//! Unicode's decimal digits (general category Nd), as phones are compared:
//! each one stands for its ASCII digit ([`ascii_digit`]), so a phone
//! written in Arabic-Indic or fullwidth digits is the phone written in
//! ASCII ones, never a shorter number with those digits dropped.

/// The zero of every run of decimal digits in Unicode but ASCII's, in code
/// point order. Every Nd character is in exactly one run, and each run is
/// ten consecutive code points, the digits 0 to 9 in order.
///
/// Unicode 18.0.0, printed by `scripts/unicode-digits.py rust` (which
/// checks both claims, and says how to run it); the same table, written
/// out for SQL's `translate()`, is in
/// `migrations/V6__search_normalization.sql` (`scripts/unicode-digits.py
/// sql`). Regenerate both when Unicode adds digits: a phone holding one of
/// a newer version's digits has it dropped, on both sides alike.
pub const DIGIT_ZEROS: [char; 76] = [
    '\u{0660}',  // ARABIC-INDIC DIGIT ZERO
    '\u{06F0}',  // EXTENDED ARABIC-INDIC DIGIT ZERO
    '\u{07C0}',  // NKO DIGIT ZERO
    '\u{0966}',  // DEVANAGARI DIGIT ZERO
    '\u{09E6}',  // BENGALI DIGIT ZERO
    '\u{0A66}',  // GURMUKHI DIGIT ZERO
    '\u{0AE6}',  // GUJARATI DIGIT ZERO
    '\u{0B66}',  // ORIYA DIGIT ZERO
    '\u{0BE6}',  // TAMIL DIGIT ZERO
    '\u{0C66}',  // TELUGU DIGIT ZERO
    '\u{0CE6}',  // KANNADA DIGIT ZERO
    '\u{0D66}',  // MALAYALAM DIGIT ZERO
    '\u{0DE6}',  // SINHALA LITH DIGIT ZERO
    '\u{0E50}',  // THAI DIGIT ZERO
    '\u{0ED0}',  // LAO DIGIT ZERO
    '\u{0F20}',  // TIBETAN DIGIT ZERO
    '\u{1040}',  // MYANMAR DIGIT ZERO
    '\u{1090}',  // MYANMAR SHAN DIGIT ZERO
    '\u{17E0}',  // KHMER DIGIT ZERO
    '\u{1810}',  // MONGOLIAN DIGIT ZERO
    '\u{1946}',  // LIMBU DIGIT ZERO
    '\u{19D0}',  // NEW TAI LUE DIGIT ZERO
    '\u{1A80}',  // TAI THAM HORA DIGIT ZERO
    '\u{1A90}',  // TAI THAM THAM DIGIT ZERO
    '\u{1B50}',  // BALINESE DIGIT ZERO
    '\u{1BB0}',  // SUNDANESE DIGIT ZERO
    '\u{1C40}',  // LEPCHA DIGIT ZERO
    '\u{1C50}',  // OL CHIKI DIGIT ZERO
    '\u{A620}',  // VAI DIGIT ZERO
    '\u{A8D0}',  // SAURASHTRA DIGIT ZERO
    '\u{A900}',  // KAYAH LI DIGIT ZERO
    '\u{A9D0}',  // JAVANESE DIGIT ZERO
    '\u{A9F0}',  // MYANMAR TAI LAING DIGIT ZERO
    '\u{AA50}',  // CHAM DIGIT ZERO
    '\u{ABF0}',  // MEETEI MAYEK DIGIT ZERO
    '\u{FF10}',  // FULLWIDTH DIGIT ZERO
    '\u{104A0}', // OSMANYA DIGIT ZERO
    '\u{10D30}', // HANIFI ROHINGYA DIGIT ZERO
    '\u{10D40}', // GARAY DIGIT ZERO
    '\u{11066}', // BRAHMI DIGIT ZERO
    '\u{110F0}', // SORA SOMPENG DIGIT ZERO
    '\u{11136}', // CHAKMA DIGIT ZERO
    '\u{111D0}', // SHARADA DIGIT ZERO
    '\u{112F0}', // KHUDAWADI DIGIT ZERO
    '\u{11450}', // NEWA DIGIT ZERO
    '\u{114D0}', // TIRHUTA DIGIT ZERO
    '\u{11650}', // MODI DIGIT ZERO
    '\u{116C0}', // TAKRI DIGIT ZERO
    '\u{116D0}', // MYANMAR PAO DIGIT ZERO
    '\u{116DA}', // MYANMAR EASTERN PWO KAREN DIGIT ZERO
    '\u{11730}', // AHOM DIGIT ZERO
    '\u{118E0}', // WARANG CITI DIGIT ZERO
    '\u{11950}', // DIVES AKURU DIGIT ZERO
    '\u{11BF0}', // SUNUWAR DIGIT ZERO
    '\u{11C50}', // BHAIKSUKI DIGIT ZERO
    '\u{11D50}', // MASARAM GONDI DIGIT ZERO
    '\u{11DA0}', // GUNJALA GONDI DIGIT ZERO
    '\u{11DE0}', // TOLONG SIKI DIGIT ZERO
    '\u{11F50}', // KAWI DIGIT ZERO
    '\u{16130}', // GURUNG KHEMA DIGIT ZERO
    '\u{16A60}', // MRO DIGIT ZERO
    '\u{16AC0}', // TANGSA DIGIT ZERO
    '\u{16B50}', // PAHAWH HMONG DIGIT ZERO
    '\u{16D70}', // KIRAT RAI DIGIT ZERO
    '\u{1CCF0}', // OUTLINED DIGIT ZERO
    '\u{1D7CE}', // MATHEMATICAL BOLD DIGIT ZERO
    '\u{1D7D8}', // MATHEMATICAL DOUBLE-STRUCK DIGIT ZERO
    '\u{1D7E2}', // MATHEMATICAL SANS-SERIF DIGIT ZERO
    '\u{1D7EC}', // MATHEMATICAL SANS-SERIF BOLD DIGIT ZERO
    '\u{1D7F6}', // MATHEMATICAL MONOSPACE DIGIT ZERO
    '\u{1E140}', // NYIAKENG PUACHUE HMONG DIGIT ZERO
    '\u{1E2F0}', // WANCHO DIGIT ZERO
    '\u{1E4F0}', // NAG MUNDARI DIGIT ZERO
    '\u{1E5F1}', // OL ONAL DIGIT ZERO
    '\u{1E950}', // ADLAM DIGIT ZERO
    '\u{1FBF0}', // SEGMENTED DIGIT ZERO
];

/// The ASCII digit a Unicode decimal digit stands for (`'٣'` and `'３'`
/// are `'3'`); `None` for any other character, ASCII digits included.
pub fn ascii_digit(c: char) -> Option<char> {
    let after = DIGIT_ZEROS.partition_point(|zero| *zero <= c);
    let zero = *DIGIT_ZEROS.get(after.checked_sub(1)?)?;
    char::from_digit(u32::from(c) - u32::from(zero), 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runs_are_in_order_ten_apart_and_numeric() {
        for pair in DIGIT_ZEROS.windows(2) {
            assert!(u32::from(pair[1]) - u32::from(pair[0]) >= 10, "{pair:?}");
        }
        for zero in DIGIT_ZEROS {
            for d in 0..10 {
                let c = char::from_u32(u32::from(zero) + d).expect("a char");
                // Rust's own tables (Unicode 17) know them as numbers.
                assert!(c.is_numeric(), "{c:?}");
            }
        }
        assert!(DIGIT_ZEROS.iter().all(|z| !z.is_ascii()));
    }

    #[test]
    fn each_digit_stands_for_its_ascii_digit_and_nothing_else_does() {
        for (c, ascii) in [
            ('\u{0663}', Some('3')),  // ARABIC-INDIC DIGIT THREE
            ('\u{06F9}', Some('9')),  // EXTENDED ARABIC-INDIC DIGIT NINE
            ('\u{FF14}', Some('4')),  // FULLWIDTH DIGIT FOUR
            ('\u{096B}', Some('5')),  // DEVANAGARI DIGIT FIVE
            ('\u{1D7D3}', Some('5')), // MATHEMATICAL BOLD DIGIT FIVE
            ('\u{1FBF9}', Some('9')), // SEGMENTED DIGIT NINE
            ('\u{0669}', Some('9')),
            ('\u{066A}', None), // ARABIC PERCENT SIGN, right after the run
            ('\u{065F}', None), // before it
            ('7', None),
            ('+', None),
            ('\u{FF0B}', None), // FULLWIDTH PLUS SIGN: no digit
            ('\u{00B2}', None), // SUPERSCRIPT TWO: a number, not a decimal digit
            ('\u{2163}', None), // ROMAN NUMERAL FOUR
            ('\u{0000}', None),
            ('\u{10FFFF}', None),
        ] {
            assert_eq!(ascii_digit(c), ascii, "{c:?}");
        }
        for zero in DIGIT_ZEROS {
            for d in 0..10u32 {
                let c = char::from_u32(u32::from(zero) + d).expect("a char");
                assert_eq!(ascii_digit(c), char::from_digit(d, 10), "{c:?}");
            }
        }
    }
}
