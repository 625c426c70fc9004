"""The customer's language: which one a request is in, and what the offline responder reads and
says in each of settings.LANGUAGES.

A turn reads the active language once (`current()`, at turns.start: the page's choice,
else Accept-Language, else LANGUAGE_CODE) and passes it down: the conversation records
it, the LLM is told to answer in it (knowledge.system_prompt), and the offline responder
answers from the knowledge file in it where the shop wrote one (`knowledge/faq.de.md`
beside `knowledge/faq.md`), else from the English file with the `in_english` note.

What the offline responder reads in each language (its stemmer, stopwords, the words
of greetings and thanks, of asking for a person) lives here as data; what it says is
in the site's message catalogues like every other sentence a customer reads (said(),
locale/<lang>/LC_MESSAGES/django.po), so a shop corrects both where it corrects the
page. The `glossary` maps a language's common words for the FAQ's topics to the
English ones, so that a French question finds its entry in an English file
("retour" -> return).
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _

# The language the main knowledge file (settings.CHAT_KNOWLEDGE_FILE) is written in.
KNOWLEDGE_LANGUAGE = "en"


def code(value: str | None) -> str:
    """`value` ("de", "de-at", "DE") as a code of settings.LANGUAGES; LANGUAGE_CODE if it is none of them."""
    known = [c for c, _ in settings.LANGUAGES]
    value = (value or "").lower().replace("_", "-")
    for candidate in (value, value.split("-")[0]):
        if candidate in known:
            return candidate
    return settings.LANGUAGE_CODE


def current() -> str:
    """The language active in this request (Django's translation), as a code of settings.LANGUAGES."""
    return code(translation.get_language())


def english_name(language: str) -> str:
    """"German" for "de": the name the LLM is told."""
    return str(translation.get_language_info(code(language))["name"])


def staff_name(language: str) -> str:
    """The language's name in the active (the staff member's) language: "Deutsch", "German"."""
    return str(translation.get_language_info(code(language))["name_translated"])


@dataclass(frozen=True)
class Offline:
    """What the offline responder reads in one language (what it says: said())."""

    stemmer: str  # snowballstemmer's name of the language
    stopwords: frozenset[str]
    greetings: frozenset[str]
    thanks: frozenset[str]
    thanks_too: frozenset[str]
    # Words of this language for the FAQ's topics, each with the English words it stands for.
    glossary: dict[str, str] = field(default_factory=dict)
    # A request for a person in this language (knowledge.wants_person; English has its own rules):
    # a verb of talking and a person, with no negation ("Ich möchte mit einem Menschen sprechen").
    talk_verbs: frozenset[str] = frozenset()
    person_nouns: frozenset[str] = frozenset()
    negations: frozenset[str] = frozenset()


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


ENGLISH = Offline(
    stemmer="english",
    stopwords=_words(
        """a an and are at be been but by can could do does did for from get got have has had how i if in
        into is it its just me my of on or our so the their them then there these they this those to too
        u up us was we were what when where which who why will with would you your yours ya am not no
        want wanted need like know tell please pls plz thanks thank thx hi hello hey dear ok okay there
        any some something anything also still yet already ca wo soon now today again one long take"""
    ),
    greetings=_words("hi hello hey hiya morning afternoon evening good dear there"),
    thanks=_words("thanks thank thx ty cheers"),
    thanks_too=_words("lot much very so great perfect awesome brilliant lovely helpful cool nice bye"),
)

GERMAN = Offline(
    stemmer="german",
    stopwords=_words(
        """ich du er sie es wir ihr mein meine meinen meinem meiner dein deine ihre ihren unser unsere euer
        der die das den dem des ein eine einen einem einer eines und oder aber wie was wann wo woher wohin
        warum wer welche welcher welches welchen ist sind bin bist war waren wird werden wurde wurden
        kann können könnte könnten kannst muss müssen darf dürfen soll sollte habe hat haben hatte hast
        mit von vom zu zum zur bei beim für auf an in im am aus nach über um bis nicht kein keine keinen
        noch schon auch nur mal bitte danke hallo hi hey gerne so dann denn doch ja nein gibt mir mich
        dir dich uns euch ihnen ihm sich man etwas da hier jetzt heute sehr ganz eigentlich einfach
        möchte möchten würde würden will wollen brauche wissen guten tag sie ihr ihrem ihres dass ob
        wenn als eure eurem"""
    ),
    greetings=_words("hallo hi hey moin servus guten tag morgen abend grüß gott grüezi"),
    thanks=_words("danke dank dankeschön vielen merci"),
    thanks_too=_words("vielen lieben herzlichen dank super toll prima perfekt klasse tschüss sehr gut schön"),
    glossary={
        "rückgabe": "return", "rücksendung": "return", "zurückschicken": "send back", "zurücksenden": "send back",
        "umtausch": "exchange", "umtauschen": "exchange", "erstattung": "refund", "geld": "money back",
        "zurück": "back", "widerruf": "return", "versand": "shipping", "versandkosten": "shipping cost",
        "lieferung": "delivery", "liefern": "deliver", "lieferzeit": "delivery time", "dauert": "how long",
        "lange": "how long", "kostenlos": "free shipping", "express": "express", "ausland": "abroad",
        "international": "international", "land": "countries", "länder": "countries", "zoll": "customs",
        "österreich": "austria", "schweiz": "switzerland", "frankreich": "france", "bestellung": "order",
        "paket": "parcel", "sendung": "shipment", "verfolgen": "track", "sendungsverfolgung": "tracking number",
        "wo": "where is my order", "angekommen": "arrived", "bezahlen": "pay", "zahlung": "payment",
        "zahlungsmethoden": "payment", "kreditkarte": "credit card", "rechnung": "invoice",
        "überweisung": "bank transfer", "stornieren": "cancel", "storno": "cancel", "ändern": "change",
        "adresse": "address", "beschädigt": "damaged", "kaputt": "broken", "defekt": "defective",
        "falsch": "wrong item", "falsche": "wrong item", "ersatz": "replacement", "kontakt": "contact",
        "telefon": "phone", "anrufen": "call", "öffnungszeiten": "opening hours", "erreichen": "reach",
    },
    talk_verbs=_words("sprechen reden chatten verbinden verbinde"),
    person_nouns=_words("""mensch menschen menschlichen person personen mitarbeiter mitarbeiterin mitarbeitern
                        berater beraterin kundenberater kundenservice kundendienst servicemitarbeiter"""),
    negations=_words("nicht kein keinen keine nie"),
)

FRENCH = Offline(
    stemmer="french",
    stopwords=_words(
        """je tu il elle on nous vous ils elles me te se moi toi mon ma mes ton ta tes son sa ses notre nos
        votre vos leur leurs le la les l un une des du de d au aux et ou mais comment que qu quoi quand où
        pourquoi qui quel quelle quels quelles est sont suis es être a ai as avez avons ont peut peux
        pouvez puis dois doit faut veux voudrais voulez avec pour par sur dans en ne pas plus non oui
        bonjour salut merci svp plait ce cet cette ces c y s n j m t très bien aussi déjà encore"""
    ),
    greetings=_words("bonjour salut coucou bonsoir allo"),
    thanks=_words("merci"),
    thanks_too=_words("beaucoup bien parfait super génial top au revoir"),
    glossary={
        "retour": "return", "retourner": "return", "renvoyer": "send back", "rembourser": "refund",
        "remboursement": "refund", "échange": "exchange", "échanger": "exchange", "politique": "policy",
        "livraison": "delivery", "livrer": "deliver", "expédition": "shipping", "envoi": "shipping",
        "délai": "delivery time", "combien": "how long", "gratuit": "free shipping", "étranger": "abroad",
        "international": "international", "pays": "countries", "douane": "customs", "suisse": "switzerland",
        "belgique": "belgium", "commande": "order", "colis": "parcel", "suivre": "track", "suivi": "track",
        "payer": "pay", "paiement": "payment", "carte": "card", "virement": "bank transfer",
        "facture": "invoice", "annuler": "cancel", "modifier": "change", "changer": "change",
        "adresse": "address", "endommagé": "damaged", "cassé": "broken", "défectueux": "defective",
        "mauvais": "wrong item", "remplacement": "replacement", "contacter": "contact", "contact": "contact",
        "téléphone": "phone", "appeler": "call", "horaires": "opening hours", "joindre": "reach",
    },
    talk_verbs=_words("parler discuter"),
    person_nouns=_words("personne humain humaine conseiller conseillère agent opérateur opératrice employé quelqu"),
    negations=_words("ne pas jamais"),
)

SPANISH = Offline(
    stemmer="spanish",
    stopwords=_words(
        """yo tú tu él ella nosotros vosotros ellos ellas me te se mi mis su sus nuestro nuestra vuestro el la
        los las lo un una unos unas de del al y o pero cómo como qué que cuándo cuando dónde donde por
        porque quién cuál cuáles es son soy está están estoy ser estar hay ha he han puedo puede pueden
        podría debo quiero quisiera con para sin en no sí si hola gracias favor muy ya también todavía
        este esta esto estos estas ese esa"""
    ),
    greetings=_words("hola buenos buenas días tardes noches saludos"),
    thanks=_words("gracias"),
    thanks_too=_words("muchas mil muy perfecto genial vale adiós bien"),
    glossary={
        "devolución": "return", "devolver": "return", "reembolso": "refund", "dinero": "money back",
        "cambio": "exchange", "cambiar": "change", "política": "policy", "envío": "shipping",
        "enviar": "shipping", "entrega": "delivery", "tarda": "how long", "tardar": "how long",
        "gratis": "free shipping", "gratuito": "free shipping", "extranjero": "abroad",
        "internacional": "international", "países": "countries", "aduana": "customs", "pedido": "order",
        "paquete": "parcel", "seguimiento": "track", "rastrear": "track", "pagar": "pay", "pago": "payment",
        "tarjeta": "card", "transferencia": "bank transfer", "factura": "invoice", "cancelar": "cancel",
        "anular": "cancel", "modificar": "change", "dirección": "address", "dañado": "damaged",
        "roto": "broken", "defectuoso": "defective", "equivocado": "wrong item", "incorrecto": "wrong item",
        "contacto": "contact", "contactar": "contact", "teléfono": "phone", "llamar": "call",
        "horario": "opening hours",
    },
    talk_verbs=_words("hablar comunicarme conversar"),
    person_nouns=_words("persona humano humana agente operador operadora asesor asesora empleado alguien"),
    negations=_words("no nunca"),
)

ARABIC = Offline(
    stemmer="arabic",
    stopwords=_words(
        """في من إلى الى على عن هل ما ماذا كيف متى أين اين لماذا هذا هذه ذلك أنا انا أنت انت نحن هو هي مع
        و أو او لا نعم يمكن يمكنني أريد اريد لي لك كان تم أن ان إن قد كل بعد قبل عند لدي لديكم لكم
        مرحبا شكرا من فضلك السلام عليكم"""
    ),
    greetings=_words("مرحبا أهلا اهلا السلام عليكم صباح مساء الخير"),
    thanks=_words("شكرا شكراً"),
    thanks_too=_words("جزيلا جزيلاً كثيرا لك لكم ممتاز رائع"),
    glossary={
        "إرجاع": "return", "ارجاع": "return", "استرجاع": "return", "إعادة": "send back", "مرتجع": "return",
        "استرداد": "refund", "المال": "money back", "استبدال": "exchange", "سياسة": "policy",
        "شحن": "shipping", "الشحن": "shipping", "توصيل": "delivery", "التوصيل": "delivery",
        "يستغرق": "how long", "مجاني": "free shipping", "دولي": "international", "الخارج": "abroad",
        "الدول": "countries", "دول": "countries", "جمارك": "customs", "الجمارك": "customs",
        "طلب": "order", "طلبي": "order", "الطلب": "order", "طرد": "parcel", "الطرد": "parcel",
        "شحنتي": "where is my order", "تتبع": "track", "أين": "where is my order", "الدفع": "payment",
        "دفع": "pay", "بطاقة": "card", "ائتمان": "credit card", "تحويل": "bank transfer",
        "إلغاء": "cancel", "الغاء": "cancel", "تغيير": "change", "تعديل": "change", "العنوان": "address",
        "تالف": "damaged", "تالفا": "damaged", "مكسور": "broken", "معطل": "defective", "خاطئ": "wrong item",
        "الخطأ": "wrong item", "اتصال": "contact", "التواصل": "contact", "هاتف": "phone", "الهاتف": "phone",
        "البريد": "email", "ساعات": "opening hours", "العمل": "opening hours",
    },
    talk_verbs=_words("التحدث أتحدث اتحدث التكلم أتكلم اتكلم تحدث أكلم اكلم"),
    person_nouns=_words("شخص موظف إنسان انسان بشري ممثل وكيل"),
    negations=_words("لا لست ليس لن"),
)

OFFLINE = {"en": ENGLISH, "de": GERMAN, "fr": FRENCH, "es": SPANISH, "ar": ARABIC}


def offline(language: str) -> Offline:
    """What the offline responder reads and says in `language`; English for one it has no words for."""
    return OFFLINE.get(code(language), ENGLISH)


@dataclass(frozen=True)
class Said:
    """What the offline responder says, in one language."""

    person: str  # the way to a person, with the page's button named as the page names it
    also_reach: str  # before the contact details, after `person`
    anyone_there: str
    welcome: str
    hello: str  # with %(topics)s
    apology: str
    reach_us: str
    not_found: str
    not_found_contact: str  # followed by the contact details
    in_english: str  # the note above an answer from the English file
    unavailable: str  # above the offline answer when the LLM may not be used (llm.ReplyStream)


def said(language: str) -> Said:
    """The offline responder's sentences in `language`, from the message catalogues."""
    with translation.override(code(language)):
        button = {"button": _("Talk to a person")}
        return Said(
            person=_("To talk to a person, press **%(button)s** at the top of the chat and someone from our "
                     "team will answer here.") % button,
            also_reach=_("You can also reach us directly:"),
            anyone_there=_("I'm the shop's assistant, here to answer at once. If you'd rather talk to a person "
                           "from our team, press **%(button)s**.") % button,
            welcome=_("You're welcome! Is there anything else I can help with?"),
            hello=_("Hello! How can I help? You can ask me things like: %(topics)s."),
            apology=_("I'm sorry about this. If you'd like a person from our team to look into it, press "
                      "**%(button)s**.") % button + "\n\n",
            reach_us=_("You can reach us here:"),
            not_found=_("I'm sorry, I couldn't find an answer to that in our FAQ. Someone from our team can "
                        "help: press **%(button)s** at the top of the chat to ask for a person here.") % button,
            not_found_contact=_("I'm sorry, I couldn't find an answer to that in our FAQ. Someone from our team "
                                "can help: press **%(button)s** at the top of the chat to ask for a person here, "
                                "or contact us directly:") % button,
            in_english=_("*This answer comes from our FAQ, which we only have in English.*"),
            unavailable=_("*Our assistant is not available right now, so this answer comes straight from our "
                          "FAQ.*") + "\n\n",
        )
