//! Synthetic HL7 v2 traffic for driving a channel: `switchboard sandbox --patients N`.
//!
//! For each invented patient [`generate`] writes four messages, in this order: ADT^A04
//! (registration), SIU^S12 (a booking), ADT^A08 (a demographic update: new mobile and e-mail)
//! and DFT^P03 (a charge for the visit). Everything is invented: names (Latin with accents,
//! and an Arabic second-language name as the second PID-5 repetition), patient numbers,
//! national ids, phones, doctors and clinics. The output depends only on the
//! [`TrafficConfig`] (a seeded generator, the start time passed in), so a run can be repeated.
//! Messages are HL7 v2.5.1 text with CR segment terminators, `UNICODE UTF-8` in MSH-18, and
//! no MLLP framing.

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc};

/// What to generate.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// How many patients (four messages each).
    pub patients: usize,
    /// Seed of the generator: the same seed gives the same messages.
    pub seed: u64,
    /// Time of the first message; the others follow a minute apart, bookings fall on the
    /// next 14 days.
    pub start: DateTime<Utc>,
    /// MSH-3 (default `SANDBOX_HIS`).
    pub sending_application: String,
    /// MSH-4, also the assigning authority of patient numbers (default `SANDBOX_CLINIC`).
    pub sending_facility: String,
    /// MSH-5 (default `SWITCHBOARD`).
    pub receiving_application: String,
    /// MSH-6 (default `HUB`).
    pub receiving_facility: String,
}

impl TrafficConfig {
    /// `patients` patients from `seed`, starting at `start`, with the default MSH names.
    pub fn new(patients: usize, seed: u64, start: DateTime<Utc>) -> Self {
        TrafficConfig {
            patients,
            seed,
            start,
            sending_application: "SANDBOX_HIS".into(),
            sending_facility: "SANDBOX_CLINIC".into(),
            receiving_application: "SWITCHBOARD".into(),
            receiving_facility: "HUB".into(),
        }
    }
}

/// SplitMix64: small, seedable and good enough for invented data.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        // Lists are constants and never empty; `below` keeps the index in range.
        &items[self.below(items.len() as u64) as usize]
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

/// (Latin given name, Arabic given name), female then male.
const FEMALE: [(&str, &str); 8] = [
    ("Léa", "ليا"),
    ("Noor", "نور"),
    ("Hélène", "هيلين"),
    ("Maryam", "مريم"),
    ("Zoë", "زوي"),
    ("Lina", "لينا"),
    ("Inès", "إيناس"),
    ("Salma", "سلمى"),
];
const MALE: [(&str, &str); 8] = [
    ("José", "خوسيه"),
    ("Yousef", "يوسف"),
    ("Jürgen", "يورغن"),
    ("Omar", "عمر"),
    ("François", "فرانسوا"),
    ("Khalid", "خالد"),
    ("Ñico", "نيكو"),
    ("Tariq", "طارق"),
];
/// (Latin family name, Arabic family name).
const FAMILY: [(&str, &str); 10] = [
    ("Haddad", "حداد"),
    ("Al-Qahtani", "القحطاني"),
    ("Müller", "مولر"),
    ("Núñez", "نونيز"),
    ("Al-Harbi", "الحربي"),
    ("Lefèvre", "لوفيفر"),
    ("Bin Saeed", "بن سعيد"),
    ("Østergård", "أوسترغارد"),
    ("Al-Shehri", "الشهري"),
    ("Çelik", "جليك"),
];
const CITIES: [&str; 4] = ["Riyadh", "Jeddah", "Dammam", "Abha"];
const STREETS: [&str; 4] = [
    "Olaya Street",
    "Tahlia Road",
    "King Fahd Road",
    "Prince Sultan St",
];
/// (doctor code, family, given, clinic code).
const DOCTORS: [(&str, &str, &str, &str); 4] = [
    ("DOC-SB-01", "Otaibi", "Sarah", "CLN-SB-PED"),
    ("DOC-SB-02", "Rahman", "Faisal", "CLN-SB-GEN"),
    ("DOC-SB-03", "Dubois", "Amélie", "CLN-SB-DER"),
    ("DOC-SB-04", "Zahrani", "Hind", "CLN-SB-GEN"),
];
/// (service code, description, price in SAR).
const SERVICES: [(&str, &str, &str); 4] = [
    ("CONS", "Consultation", "350.00"),
    ("FUP", "Follow-up visit", "200.00"),
    ("ECG", "Electrocardiogram", "150.00"),
    ("VACC", "Vaccination", "90.00"),
];

/// One segment with its fields placed by number (field 1 first); gaps stay empty.
fn segment(name: &str, fields: &[(usize, String)]) -> String {
    let last = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut values = vec![String::new(); last];
    for (n, v) in fields {
        values[n - 1].clone_from(v);
    }
    let mut out = name.to_string();
    for v in values {
        out.push('|');
        out.push_str(&v);
    }
    out.push('\r');
    out
}

/// The invented facts about one patient.
struct Patient {
    mrn: String,
    national_id: String,
    latin: (String, String),
    arabic: (String, String),
    birth_date: String,
    sex: &'static str,
    phone: String,
    new_phone: String,
    email: String,
    address: String,
    visit: String,
    doctor: (&'static str, &'static str, &'static str, &'static str),
    service: (&'static str, &'static str, &'static str),
    slot: DateTime<Utc>,
}

impl Patient {
    fn invent(rng: &mut Rng, index: usize, start: DateTime<Utc>) -> Patient {
        let female = rng.below(2) == 0;
        let (given, given_ar) = if female {
            *rng.pick(&FEMALE)
        } else {
            *rng.pick(&MALE)
        };
        let (family, family_ar) = *rng.pick(&FAMILY);
        let year = 1940 + rng.below(80);
        let birth_date = format!("{year}{:02}{:02}", 1 + rng.below(12), 1 + rng.below(28));
        let day = start.date_naive() + Duration::days(1 + rng.below(14) as i64);
        let minutes = 8 * 60 + 30 * rng.below(18) as u32;
        let time = NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).unwrap_or_default();
        let email_name: String = given
            .chars()
            .filter(char::is_ascii_alphabetic)
            .collect::<String>()
            .to_lowercase();
        Patient {
            mrn: format!("SB{:06}", index + 1),
            national_id: format!("{}{}", 1 + rng.below(2), rng.digits(9)),
            latin: (family.to_string(), given.to_string()),
            arabic: (family_ar.to_string(), given_ar.to_string()),
            birth_date,
            sex: if female { "F" } else { "M" },
            phone: format!("+9665{}", rng.digits(8)),
            new_phone: format!("+9665{}", rng.digits(8)),
            email: format!("{email_name}.{}@example.org", index + 1),
            address: format!(
                "{} {}^^{}^^{}^SA",
                1 + rng.below(400),
                rng.pick(&STREETS),
                rng.pick(&CITIES),
                rng.digits(5)
            ),
            visit: format!("V{}{:06}", day.year(), index + 1),
            doctor: *rng.pick(&DOCTORS),
            service: *rng.pick(&SERVICES),
            slot: day.and_time(time).and_utc(),
        }
    }

    fn pid(&self, facility: &str, updated: bool) -> String {
        let phone = if updated {
            &self.new_phone
        } else {
            &self.phone
        };
        let mut telecom = format!("{phone}^PRN^CP");
        if updated {
            telecom.push_str(&format!("~^NET^Internet^{}", self.email));
        }
        segment(
            "PID",
            &[
                (1, "1".into()),
                (
                    3,
                    format!("{}^^^{facility}^MR~{}^^^SA^NI", self.mrn, self.national_id),
                ),
                (
                    5,
                    format!(
                        "{}^{}^^^^^L~{}^{}^^^^^L",
                        self.latin.0, self.latin.1, self.arabic.0, self.arabic.1
                    ),
                ),
                (7, self.birth_date.clone()),
                (8, self.sex.into()),
                (11, self.address.clone()),
                (13, telecom),
                (15, "ar".into()),
                (18, self.visit.clone()),
                (28, "SAU".into()),
            ],
        )
    }

    fn pv1(&self, facility: &str) -> String {
        let (code, family, given, clinic) = self.doctor;
        segment(
            "PV1",
            &[
                (1, "1".into()),
                (2, "O".into()),
                (3, format!("{clinic}^^^{facility}")),
                (7, format!("{code}^{family}^{given}")),
                (19, self.visit.clone()),
            ],
        )
    }
}

fn hl7_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S").to_string()
}

/// Generates `4 * cfg.patients` messages; see the module documentation.
pub fn generate(cfg: &TrafficConfig) -> Vec<String> {
    let mut rng = Rng(cfg.seed);
    let mut out = Vec::with_capacity(cfg.patients * 4);
    let fac = cfg.sending_facility.as_str();
    let mut minute = 0i64;
    let mut msh = |kind: &str, structure: &str| {
        let ts = hl7_time(cfg.start + Duration::minutes(minute));
        minute += 1;
        let ctrl = format!("SB{:x}-{minute:06}", cfg.seed & 0xffff);
        let header = format!(
            "MSH|^~\\&|{}|{fac}|{}|{}|{ts}||{kind}^{structure}|{ctrl}|P|2.5.1||||||UNICODE UTF-8\r",
            cfg.sending_application, cfg.receiving_application, cfg.receiving_facility
        );
        (header, ts)
    };
    for index in 0..cfg.patients {
        let p = Patient::invent(&mut rng, index, cfg.start);
        let (doc_code, doc_family, doc_given, clinic) = p.doctor;
        let (svc_code, svc_name, price) = p.service;
        let slot = hl7_time(p.slot);
        let slot_end = hl7_time(p.slot + Duration::minutes(30));

        let (h, ts) = msh("ADT^A04", "ADT_A01");
        out.push(format!(
            "{h}{}{}{}",
            segment("EVN", &[(1, "A04".into()), (2, ts)]),
            p.pid(fac, false),
            p.pv1(fac)
        ));

        let (h, _) = msh("SIU^S12", "SIU_S12");
        let appt = format!("APT{:06}", index + 1);
        out.push(format!(
            "{h}{}{}{}{}{}{}{}",
            segment(
                "SCH",
                &[
                    (1, format!("{appt}^{fac}")),
                    (2, format!("{appt}^{fac}")),
                    (7, format!("{svc_code}^{svc_name}")),
                    (9, "30".into()),
                    (10, "min".into()),
                    (11, format!("^^30^{slot}^{slot_end}")),
                    (25, "Booked".into()),
                ],
            ),
            p.pid(fac, false),
            p.pv1(fac),
            segment("RGS", &[(1, "1".into())]),
            segment(
                "AIS",
                &[
                    (1, "1".into()),
                    (3, format!("{svc_code}^{svc_name}")),
                    (4, slot.clone()),
                    (7, "30".into()),
                    (8, "min".into()),
                ],
            ),
            segment("AIL", &[(1, "1".into()), (3, format!("{clinic}^^^{fac}"))]),
            segment(
                "AIP",
                &[
                    (1, "1".into()),
                    (3, format!("{doc_code}^{doc_family}^{doc_given}")),
                    (4, "D".into()),
                ],
            ),
        ));

        let (h, ts) = msh("ADT^A08", "ADT_A01");
        out.push(format!(
            "{h}{}{}{}",
            segment("EVN", &[(1, "A08".into()), (2, ts)]),
            p.pid(fac, true),
            p.pv1(fac)
        ));

        let (h, ts) = msh("DFT^P03", "DFT_P03");
        out.push(format!(
            "{h}{}{}{}{}",
            segment("EVN", &[(1, "P03".into()), (2, ts)]),
            p.pid(fac, true),
            p.pv1(fac),
            segment(
                "FT1",
                &[
                    (1, "1".into()),
                    (2, format!("TX{:06}", index + 1)),
                    (4, slot.clone()),
                    (5, slot),
                    (6, "CG".into()),
                    (7, format!("{svc_code}^{svc_name}^LOCAL")),
                    (10, "1".into()),
                    (11, format!("{price}&SAR")),
                    (16, format!("{clinic}^^^{fac}")),
                    (20, format!("{doc_code}^{doc_family}^{doc_given}")),
                ],
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestSandbox;
    use crate::{SandboxConfig, SlotRefusal};
    use channels::mllp::client::MllpClient;
    use std::collections::HashSet;
    use transforms::hl7v2::header::MessageHeader;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T07:00:00Z")
            .expect("valid time")
            .with_timezone(&Utc)
    }

    #[test]
    fn same_seed_same_messages_other_seed_other_messages() {
        let a = generate(&TrafficConfig::new(5, 42, start()));
        assert_eq!(a, generate(&TrafficConfig::new(5, 42, start())));
        assert_ne!(a, generate(&TrafficConfig::new(5, 43, start())));
        assert_eq!(a.len(), 20);
    }

    #[test]
    fn messages_have_the_right_types_unique_ids_and_cr_segments() {
        let msgs = generate(&TrafficConfig::new(25, 7, start()));
        let types: Vec<String> = msgs
            .iter()
            .map(|m| MessageHeader::read(m).expect("readable MSH").message_type())
            .collect();
        assert_eq!(&types[..4], ["ADT^A04", "SIU^S12", "ADT^A08", "DFT^P03"]);
        let ids: HashSet<String> = msgs
            .iter()
            .map(|m| MessageHeader::read(m).expect("MSH").control_id)
            .collect();
        assert_eq!(ids.len(), msgs.len(), "control ids are unique");
        for m in &msgs {
            assert!(m.ends_with('\r') && !m.contains('\n'));
            let h = MessageHeader::read(m).expect("MSH");
            assert_eq!(
                (h.version.as_str(), h.charset.as_str()),
                ("2.5.1", "UNICODE UTF-8")
            );
        }
        let all = msgs.concat();
        assert!(
            all.chars().any(|c| ('\u{0600}'..='\u{06ff}').contains(&c)),
            "Arabic names"
        );
        assert!(
            all.chars().any(|c| "éèüñçøëÑ".contains(c)),
            "accented Latin names"
        );
        let pid = msgs[0]
            .split('\r')
            .find(|s| s.starts_with("PID"))
            .expect("PID");
        let fields: Vec<&str> = pid.split('|').collect();
        assert_eq!(fields[3].split('^').next(), Some("SB000001"));
        assert_eq!(fields[28], "SAU");
        let ft1 = msgs[3]
            .split('\r')
            .find(|s| s.starts_with("FT1"))
            .expect("FT1");
        assert_eq!(ft1.split('|').nth(6), Some("CG"));
    }

    #[tokio::test]
    async fn simulated_his_accepts_generated_traffic_and_refuses_by_doctor() {
        let msgs = generate(&TrafficConfig::new(3, 9, start()));
        let siu = &msgs[1];
        let aip = siu.split('\r').find(|s| s.starts_with("AIP")).expect("AIP");
        let doctor = aip
            .split('|')
            .nth(3)
            .and_then(|f| f.split('^').next())
            .expect("doctor");
        let mut cfg = SandboxConfig::for_tests();
        cfg.his_refuse_slots = SlotRefusal::Doctors {
            codes: vec![doctor.to_string()],
        };
        let t = TestSandbox::start(cfg).await;
        let mut c = MllpClient::connect(
            &t.sb.his_mllp_addr.to_string(),
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("connects");
        for (i, m) in msgs.iter().enumerate() {
            let ack = c.send(m.as_bytes()).await.expect("answered");
            let ack = String::from_utf8(ack.to_vec()).expect("utf-8");
            let ctrl = MessageHeader::read(m).expect("MSH").control_id;
            // Only bookings with the refused doctor (message 1 among them) are refused.
            let refused = m.contains(&format!("AIP|1||{doctor}^"));
            assert!(i != 1 || refused);
            let expected = if refused { "AE" } else { "AA" };
            assert!(
                ack.contains(&format!("MSA|{expected}|{ctrl}")),
                "message {i}: {ack}"
            );
        }
    }
}
