"""Audio corpora: layouts -> manifest -> reader -> windows -> batch samplers -> DataModules."""
