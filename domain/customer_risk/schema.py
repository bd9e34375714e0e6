"""The fintech's data contract for customer risk: raw columns, closed category sets, rates, file names.

One place for each of these facts; the generator writes them, ingestion validates against them, the
oracle's evidence and any later feature stage read them from here.

Raw layout (a folder; the generator writes it, your own export of the same structure works too)::

    <raw_dir>/labeled/customers.csv|.parquet      customers + account_state + review_time
    <raw_dir>/labeled/transactions.csv|.parquet
    <raw_dir>/unlabeled/customers.csv|.parquet    same customer columns, no label
    <raw_dir>/unlabeled/transactions.csv|.parquet
    <raw_dir>/extract.json                        {"extracted_at": "...Z"}: when the export was taken
    <raw_dir>/oracle.parquet, defects.csv          generator only: true probabilities, planted defects
"""

from __future__ import annotations

# --- cohorts and files -------------------------------------------------------------------------------
LABELED = "labeled"
UNLABELED = "unlabeled"
COHORTS = (LABELED, UNLABELED)
CUSTOMERS = "customers"  # file stem, in each cohort's folder
TRANSACTIONS = "transactions"
RAW_EXTENSIONS = (".parquet", ".csv")  # looked up in this order
EXTRACT_FILE = "extract.json"  # {"extracted_at": ISO-8601 UTC}: the export's "now"
EXTRACTED_AT = "extracted_at"
ORACLE_FILE = "oracle.parquet"
DEFECTS_FILE = "defects.csv"
# Clean tables written by ingestion (in --clean).
CLEAN_CUSTOMERS = "customers.parquet"
CLEAN_TRANSACTIONS = "transactions.parquet"

# --- customers ---------------------------------------------------------------------------------------
ID = "customer_id"
SIGNUP_TIME = "signup_time"
COHORT = "cohort"
ACCOUNT_STATE = "account_state"  # the label (labeled cohort only)
REVIEW_TIME = "review_time"  # when the account state was decided (labeled cohort only)
CUSTOMER_CATEGORICAL = [
    "country",
    "age_band",
    "kyc_level",
    "occupation",
    "declared_income_band",
    "account_type",
]
RAW_CUSTOMER_COLUMNS = [ID, SIGNUP_TIME, *CUSTOMER_CATEGORICAL]
RAW_LABELED_CUSTOMER_COLUMNS = [*RAW_CUSTOMER_COLUMNS, ACCOUNT_STATE, REVIEW_TIME]

ACTIVE = "ACTIVE"
SUSPENDED = "SUSPENDED"  # off-boarded because of risk: the positive class
ACCOUNT_STATES = frozenset({ACTIVE, SUSPENDED})  # upper-case in the contract

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
KYC_LEVELS = ("basic", "standard", "enhanced")
OCCUPATIONS = (
    "employee",
    "public_servant",
    "self_employed",
    "freelancer",
    "business_owner",
    "cash_intensive_business",
    "student",
    "retired",
    "unemployed",
    "homemaker",
    "investor",
    "other",
)
INCOME_BANDS = ("<15k", "15-30k", "30-60k", "60-100k", "100k+")
# EUR per year; the open-ended bands get a representative value. Used to compare inflows with income.
INCOME_BAND_MIDPOINT_EUR = {
    "<15k": 10_000,
    "15-30k": 22_500,
    "30-60k": 45_000,
    "60-100k": 80_000,
    "100k+": 150_000,
}
ACCOUNT_TYPES = ("personal", "business", "premium")

# --- transactions ------------------------------------------------------------------------------------
TX_ID = "transaction_id"
TIMESTAMP = "timestamp"
AMOUNT = "amount"  # positive, in `currency`; the direction is given by `type`
AMOUNT_EUR = "amount_eur"  # clean table only: amount * EUR_PER_UNIT[currency]
RAW_TRANSACTION_COLUMNS = [
    TX_ID,
    ID,
    TIMESTAMP,
    AMOUNT,
    "currency",
    "type",
    "counterparty_country",
    "merchant_category",
    "channel",
    "status",
]

TX_TYPES = (
    "card_payment",
    "transfer_in",
    "transfer_out",
    "crypto_buy",
    "crypto_sell",
    "cash_withdrawal",
    "cash_deposit",
)
INBOUND_TYPES = frozenset({"transfer_in", "cash_deposit", "crypto_sell"})  # money into the account
OUTBOUND_TYPES = frozenset({"card_payment", "transfer_out", "crypto_buy", "cash_withdrawal"})
# Types with a counterparty country (required for them); card and cash have none.
COUNTERPARTY_TYPES = frozenset({"transfer_in", "transfer_out", "crypto_buy", "crypto_sell"})
MERCHANT_TYPES = frozenset({"card_payment"})  # merchant_category is for card payments only
MERCHANT_CATEGORIES = (
    "grocery",
    "restaurants",
    "transport",
    "fuel",
    "online_retail",
    "electronics",
    "travel",
    "entertainment",
    "utilities",
    "health",
    "clothing",
    "gambling",
    "other",
)
MERCHANT_CATEGORY_FILL = "other"  # a card payment without a category gets this one (counted as a repair)
CHANNELS = ("app", "web", "atm", "branch", "pos")
COMPLETED = "completed"
DECLINED = "declined"
REVERSED = "reversed"
STATUSES = (COMPLETED, DECLINED, REVERSED)

# Fixed conversion rates of the synthetic world, EUR per unit of the currency (roughly 2025 levels).
EUR_PER_UNIT = {
    "EUR": 1.0,
    "USD": 0.92,
    "GBP": 1.17,
    "CHF": 1.05,
    "PLN": 0.233,
    "RON": 0.201,
    "TRY": 0.027,
    "AED": 0.25,
    "SEK": 0.088,
    "CZK": 0.040,
    "HUF": 0.0025,
    "NOK": 0.086,
    "DKK": 0.134,
}
CURRENCIES = frozenset(EUR_PER_UNIT)

# High-risk jurisdictions of this synthetic world (inspired by FATF's public lists; not an authority).
HIGH_RISK_COUNTRIES = frozenset({"AF", "BF", "HT", "IR", "KP", "ML", "MM", "NG", "SS", "SY", "VE", "YE"})

# Cash-transaction reporting threshold (EUR equivalent): structuring means staying just under it.
REPORTING_THRESHOLD_EUR = 10_000.0
STRUCTURING_FLOOR_EUR = 8_500.0  # "just under": [floor, threshold)
