"""Release pipeline for the monthly update bundles of Парус-КАЗ.Бюджет."""

__version__ = "0.1.0"
