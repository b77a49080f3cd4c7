use budget::{Money, PriceTable, Tokens};

#[cfg(feature = "litellm")]
#[test]
fn litellm_prices_are_read_exactly() {
    let t = PriceTable::from_litellm_json(include_str!("data/litellm_sample.json")).unwrap();
    let gpt = t.resolve("gpt-4.1").unwrap().price;
    assert_eq!(gpt.input_per_mtok, Money::from_dollars(2));
    assert_eq!(gpt.output_per_mtok, Money::from_dollars(8));
    assert_eq!(gpt.cached_input_per_mtok, Money::from_cents(50));
    assert_eq!(gpt.context_window, Some(1_047_576));
    let mini = t.resolve("gpt-4o-mini").unwrap().price;
    assert_eq!(mini.input_per_mtok, Money::from_micros(150_000));
    assert_eq!(mini.cached_input_per_mtok, Money::from_micros(75_000));
    // No cache price: cached input costs the input price.
    let ds = t.resolve("deepseek/deepseek-chat").unwrap().price;
    assert_eq!(ds.cached_input_per_mtok, Money::from_micros(270_000));
    // Entries that are not priced per token are skipped.
    assert!(t.resolve("dall-e-3").is_err());
    assert!(t.resolve("sample_spec").is_err());
    // Merged over the defaults, LiteLLM's split prices replace the blended ones.
    let mut merged = PriceTable::defaults();
    merged.merge(t);
    assert_eq!(
        merged
            .resolve("gpt-4.1")
            .unwrap()
            .price
            .cost(Tokens::new(1_000_000, 1_000_000)),
        Money::from_dollars(10)
    );
    assert!(PriceTable::from_litellm_json("[1, 2]").is_err());
    assert!(PriceTable::from_litellm_json("{not json").is_err());
}

#[cfg(feature = "toml")]
#[test]
fn toml_overrides_with_strings_numbers_aliases_and_a_policy() {
    let t = PriceTable::from_toml(
        r#"
        [models."gpt-4.1"]
        input_per_mtok = "2.00"
        output_per_mtok = 8
        cached_input_per_mtok = 0.5
        context_window = 1047576
        aliases = ["gpt-4.1-2025-04-14"]

        [models.local-llama]
        input_per_mtok = "0"
        output_per_mtok = "0"

        [unknown_model]
        policy = "charge"
        per_mtok = "10.00"
        "#,
    )
    .unwrap();
    let r = t.resolve("gpt-4.1-2025-04-14").unwrap();
    assert_eq!(
        (
            r.model,
            r.price.input_per_mtok,
            r.price.output_per_mtok,
            r.price.cached_input_per_mtok
        ),
        (
            "gpt-4.1",
            Money::from_dollars(2),
            Money::from_dollars(8),
            Money::from_cents(50)
        )
    );
    assert_eq!(
        t.resolve("local-llama")
            .unwrap()
            .price
            .cost(Tokens::new(1000, 1000)),
        Money::ZERO
    );
    assert!(t.resolve("anything").unwrap().defaulted);
}

#[cfg(feature = "toml")]
#[test]
fn toml_errors_name_the_field_and_line() {
    let err =
        PriceTable::from_toml("[models.x]\ninput_per_mtok = \"1\"\noutput_per_mtok = \"-3\"\n")
            .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("invalid budget config: ")
            && msg.contains("line 3")
            && msg.contains("output_per_mtok")
            && msg.contains("\"-3\" is not an amount of dollars"),
        "{msg}"
    );
    let err = PriceTable::from_toml(
        "[models.x]\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\"\ncolour = 3\n",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("unknown field `colour`") && msg.contains("line 4"),
        "{msg}"
    );
    let err = PriceTable::from_toml("[unknown_model]\npolicy = \"charge\"\n").unwrap_err();
    assert!(err.to_string().contains("needs per_mtok"), "{err}");
}
