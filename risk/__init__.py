"""The risk engine: pre-authorisation rules (`risk/rules.yaml`), the facts they read, KYC gates per market, AML
scenarios and the cases they open. Imports the foundation and ledger reads only."""
