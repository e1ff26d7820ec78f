"""Reference tables of the synthetic insurance data: regions, names, products."""

from __future__ import annotations

import math
from dataclasses import dataclass

TARGET_LOSS_RATIO = 0.70
"""Loss ratio the products are priced at."""

# Region -> (population in millions, claim severity factor).
REGIONS: dict[str, tuple[float, float]] = {
    "Auvergne-Rhône-Alpes": (8.1, 1.04),
    "Bourgogne-Franche-Comté": (2.8, 0.89),
    "Bretagne": (3.4, 0.88),
    "Centre-Val de Loire": (2.6, 0.91),
    "Corse": (0.35, 1.10),
    "Grand Est": (5.6, 0.96),
    "Hauts-de-France": (6.0, 0.95),
    "Île-de-France": (12.3, 1.18),
    "Normandie": (3.3, 0.92),
    "Nouvelle-Aquitaine": (6.1, 0.97),
    "Occitanie": (6.0, 1.02),
    "Pays de la Loire": (3.9, 0.90),
    "Provence-Alpes-Côte d'Azur": (5.1, 1.12),
}
# fmt: off
_FIRST_NAMES = (
    "Marie", "Jean", "Pierre", "Nathalie", "Isabelle", "Philippe", "Sophie", "Michel",
    "Catherine", "Nicolas", "Sylvie", "Laurent", "Christine", "Julien", "Céline", "Thomas",
    "Sandrine", "Éric", "Valérie", "Stéphane", "Aurélie", "David", "Camille", "Frédéric", "Julie",
    "Olivier", "Émilie", "Sébastien", "Claire", "Christophe", "Hélène", "François", "Anne",
    "Alain", "Léa", "Patrick", "Manon", "Vincent", "Chloé", "Romain", "Inès", "Hugo", "Louise",
    "Mathieu", "Sarah", "Antoine", "Pauline", "Guillaume", "Élodie", "Maxime", "Laura",
    "Alexandre", "Lucie", "Benoît", "Margaux", "Yves", "Agnès", "Gérard", "Noémie", "Lucas",
    "Zoé", "Arnaud", "Jeanne", "Bruno",
)
_LAST_NAMES = (
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
    "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel",
    "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent",
    "Muller", "Lefebvre", "Faure", "André", "Mercier", "Blanc", "Guérin", "Boyer", "Garnier",
    "Chevalier", "François", "Legrand", "Gauthier", "Garcia", "Perrin", "Robin", "Clément",
    "Morin", "Nicolas", "Henry", "Roussel", "Mathieu", "Gautier", "Masson", "Marchand", "Duval",
    "Denis", "Dumont", "Marie", "Lemaire", "Noël", "Meyer", "Dufour", "Meunier", "Brun",
    "Blanchard", "Giraud", "Joly",
)
# fmt: on
HOLDERS = tuple(f"{f} {last}" for f in _FIRST_NAMES[:64] for last in _LAST_NAMES[:64])


@dataclass(frozen=True, slots=True)
class Product:
    """An insurance line: its share of the portfolio, claim frequency and guarantees."""

    label: str
    code: str
    policy_share: float
    frequency: float
    """Claims per policy and year."""
    guarantees: tuple[tuple[str, int, float, float], ...]
    """(label, weight, mu, sigma) of the lognormal claim amount per guarantee."""

    @property
    def mean_severity(self) -> float:
        total = sum(w for _, w, _, _ in self.guarantees)
        return sum(w * math.exp(mu + s * s / 2) for _, w, mu, s in self.guarantees) / total

    @property
    def base_premium(self) -> float:
        """Average annual premium pricing the line at :data:`TARGET_LOSS_RATIO`."""
        return self.frequency * self.mean_severity / TARGET_LOSS_RATIO


PRODUCTS: tuple[Product, ...] = (
    Product(
        "Auto",
        "AU",
        0.38,
        0.17,
        (
            ("Bris de glace", 38, 6.0, 0.35),
            ("Collision", 45, 7.6, 0.8),
            ("Vol", 10, 8.3, 0.7),
            ("Incendie", 3, 8.8, 0.8),
            ("Dommages corporels", 4, 8.9, 1.2),
        ),
    ),
    Product(
        "Habitation",
        "HA",
        0.32,
        0.06,
        (
            ("Dégât des eaux", 50, 7.0, 0.7),
            ("Cambriolage", 15, 7.8, 0.8),
            ("Incendie", 8, 9.2, 1.0),
            ("Catastrophe naturelle", 7, 8.9, 1.0),
            ("Bris de glace", 10, 5.9, 0.4),
            ("Responsabilité civile", 10, 7.2, 0.9),
        ),
    ),
    Product(
        "Santé",
        "SA",
        0.20,
        0.8,
        (
            ("Consultation", 40, 3.6, 0.5),
            ("Pharmacie", 25, 3.5, 0.8),
            ("Optique", 12, 5.6, 0.5),
            ("Dentaire", 13, 5.8, 0.7),
            ("Hospitalisation", 10, 7.3, 0.9),
        ),
    ),
    Product(
        "Prévoyance",
        "PR",
        0.10,
        0.02,
        (
            ("Incapacité temporaire", 70, 7.8, 0.7),
            ("Invalidité", 20, 9.6, 0.6),
            ("Décès", 10, 10.6, 0.5),
        ),
    ),
)
