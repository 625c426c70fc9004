"""Customer questions and the knowledge/faq.md entry each should get: the offline responder's measure.

Written the way customers write (short and long, typos, no question mark, other
words than the FAQ's), including off-topic ones that should get the fallback
(contact details and the way to a person) and requests for a person. Each
expected answer is the entry's heading, CONTACT for the `# Contact` section,
PERSON when knowledge.wants_person should see a request for a person, FALLBACK
when no entry answers it.

    make faq-eval     prints the share answered right, each miss, and the time per question,
                      for QUESTIONS and UNSEEN (which entry), for REALISTIC (the whole answer),
                      for GERMAN (which entry of knowledge/faq.de.md), and for ELSEWHERE
                      (French, Spanish, Arabic: which entry of faq.md, through the glossary)

test_knowledge.py asserts the share stays at or above its threshold.
"""

RETURNS = "What is your return policy?"
SHIPPING = "How long does shipping take?"
INTERNATIONAL = "Do you ship internationally?"
TRACKING = "How can I track my order?"
PAYMENT = "Which payment methods do you accept?"
CHANGE = "Can I change or cancel my order?"
DAMAGED = "My item arrived damaged or wrong. What do I do?"
CONTACT = "Contact"
PERSON = "(a person)"
FALLBACK = "(fallback: contact details and the way to a person)"

QUESTIONS = [
    # Returns and refunds
    ("I want a refund", RETURNS),
    ("Can I send it back and get my money?", RETURNS),
    ("how do i return something", RETURNS),
    ("What's your returns policy?", RETURNS),
    ("I changed my mind about the shoes I bought, can I get my money back?", RETURNS),
    ("refund pls", RETURNS),
    ("Do I have to pay for the return shipping?", RETURNS),
    ("How long do refunds take?", RETURNS),
    ("can i exchange a jumper for a bigger size", RETURNS),
    ("retrun policy?", RETURNS),
    ("Can I return a sale item?", RETURNS),
    (
        "Hi there, I bought a jacket from you last week but it's too small and I'd like to send it "
        "back. How does that work?",
        RETURNS,
    ),
    ("i didnt like the product, how do i get reimbursed", RETURNS),
    # Shipping times and costs at home
    ("How long does delivery take?", SHIPPING),
    ("when will my order arrive", SHIPPING),
    ("Is shipping free?", SHIPPING),
    ("how much is postage", SHIPPING),
    ("Do you have express delivery?", SHIPPING),
    ("shiping time", SHIPPING),
    ("If I order today, when does it ship?", SHIPPING),
    ("delivery cost to Berlin", SHIPPING),
    ("how many days until i get my stuff", SHIPPING),
    # Abroad
    ("Arrive in Austria?", INTERNATIONAL),
    ("Do you deliver to France?", INTERNATIONAL),
    ("Can I order from the UK?", INTERNATIONAL),
    ("How long does shipping to Switzerland take?", INTERNATIONAL),
    ("do u ship abroad", INTERNATIONAL),
    ("Will I have to pay customs duties in Norway?", INTERNATIONAL),
    ("Which countries do you ship to?", INTERNATIONAL),
    ("ship to usa?", INTERNATIONAL),
    ("delivery to the netherlands how long", INTERNATIONAL),
    # Where is my parcel
    ("my parcel is late", TRACKING),
    ("Where is my order?", TRACKING),
    ("wheres my package", TRACKING),
    ("I ordered a week ago and it still hasn't arrived", TRACKING),
    ("tracking number", TRACKING),
    ("The tracking link doesn't work", TRACKING),
    ("has my order shipped yet?", TRACKING),
    (
        "Hello, I placed an order three days ago (order 10432) and the tracking still says nothing. "
        "Is something wrong?",
        TRACKING,
    ),
    ("my pakage hasnt come", TRACKING),
    # Paying
    ("Can I pay with PayPal?", PAYMENT),
    ("Do you take credit cards?", PAYMENT),
    ("when do you charge my card?", PAYMENT),
    ("Is Apple Pay accepted?", PAYMENT),
    ("pay by invoice?", PAYMENT),
    ("paymnet options", PAYMENT),
    ("do you accept bank transfer or only cards", PAYMENT),
    # Changing or cancelling
    ("I need to cancel my order", CHANGE),
    ("Can I change the delivery address?", CHANGE),
    ("ordered the wrong size by mistake, can I change it before it ships?", CHANGE),
    ("cancle order", CHANGE),
    ("I want to add something to my order", CHANGE),
    # Damaged or wrong
    ("my item arrived broken", DAMAGED),
    ("The package came damaged, what now?", DAMAGED),
    ("you sent me the wrong colour", DAMAGED),
    ("the lamp doesn't work", DAMAGED),
    ("Part of my order is missing", DAMAGED),
    ("got a defective product", DAMAGED),
    # Reaching the shop
    ("what's your phone number", CONTACT),
    ("How can I contact you?", CONTACT),
    ("email address?", CONTACT),
    ("Are you open on Saturday?", CONTACT),
    ("what are your opening hours", CONTACT),
    ("how do I reach customer service", CONTACT),
    ("telefon number", CONTACT),
    # A person
    ("Can I talk to a human?", PERSON),
    ("agent please", PERSON),
    ("real person", PERSON),
    ("I want to speak to someone about my refund", PERSON),
    ("humna", PERSON),
    ("operator!!", PERSON),
    ("Please call me back", PERSON),
    ("My parcel is late and I'm getting annoyed, can I talk to a real person?", PERSON),
    ("connect me with customer support", PERSON),
    # Nothing in the FAQ
    ("Do you sell gift cards?", FALLBACK),
    ("What's the weather in Berlin?", FALLBACK),
    ("Can you recommend a laptop?", FALLBACK),
    ("Is this product human-safe?", FALLBACK),
    ("what does the agent fee cover", FALLBACK),
    ("Do you have a discount code?", FALLBACK),
    ("asdfgh", FALLBACK),
    ("what is your privacy policy", FALLBACK),
    ("Are your products vegan?", FALLBACK),
    ("Do you have a shop in Munich I can visit?", FALLBACK),
]

# Written after the matcher and the keywords were tuned on QUESTIONS, and not tuned
# on since: the honest figure of how it does on wording it has not seen.
UNSEEN = [
    ("how do refunds work", RETURNS),
    ("Can I bring back an item I bought online?", RETURNS),
    ("the dress doesnt fit, what can i do", RETURNS),
    ("is there a time limit for returns", RETURNS),
    ("How fast is delivery?", SHIPPING),
    ("Whats the shipping fee", SHIPPING),
    ("do you deliver on weekends", SHIPPING),
    ("Do you ship to Italy?", INTERNATIONAL),
    ("I live in Spain, can you send it there?", INTERNATIONAL),
    ("import fees for UK orders?", INTERNATIONAL),
    ("Where is my stuff? I ordered 2 weeks ago", TRACKING),
    ("my order still hasnt arrived", TRACKING),
    ("how do i know when my parcel will come", TRACKING),
    ("Can I pay in instalments with Klarna?", PAYMENT),
    ("google pay ok?", PAYMENT),
    ("please cancel my order", CHANGE),
    ("I put the wrong address on my order", CHANGE),
    ("the glass was shattered when it arrived", DAMAGED),
    ("you sent the wrong item", DAMAGED),
    ("whats your email", CONTACT),
    ("what time do you close", CONTACT),
    ("let me talk to a human", PERSON),
    ("i want a real agent not a bot", PERSON),
    ("Do you have jobs available?", FALLBACK),
    ("who won the football last night", FALLBACK),
    ("Is the blue sofa in stock?", FALLBACK),
]


# The offline responder's whole answer to messages as they come in real conversations, written
# for issue 18 and kept apart from the sets above (their matching was tuned; this is about the
# answer's shape): complaints and urgency (an apology and the offer of a person first), yes/no
# questions about what the file does not list ("we don't list X" before the nearest entry), two
# questions in one message (both answered), and "anyone there?" (the offer of a person).
APOLOGY = "apology"
UNLISTED = "we don't list"
OFFER = "(the offer of a person)"


def answer(*parts: str) -> str:
    """An expected answer: its parts in order, e.g. answer(APOLOGY, TRACKING)."""
    return " + ".join(parts)


REALISTIC = [
    # Complaints and urgency
    ("my parcel is two weeks late, I want my money back NOW", answer(APOLOGY, TRACKING)),
    ("This is ridiculous, the vase arrived broken", answer(APOLOGY, DAMAGED)),
    ("Where is my order??!! I've been waiting for ages", answer(APOLOGY, TRACKING)),
    ("worst shop ever, nobody answers my emails", answer(APOLOGY, CONTACT)),  # contact details, as the fallback
    ("URGENT: I ordered the wrong size, please cancel it", answer(APOLOGY, CHANGE)),
    ("I'm fed up, the refund still hasn't reached my card", answer(APOLOGY, RETURNS)),
    # Yes/no questions about what the file does not list
    ("Can I pay with Klarna?", answer(UNLISTED, PAYMENT)),
    ("Do you accept Bitcoin?", answer(UNLISTED, PAYMENT)),
    ("can i pay by cheque", answer(UNLISTED, PAYMENT)),
    ("Do you ship to Brazil?", answer(UNLISTED, INTERNATIONAL)),
    ("Do you deliver to Canada?", INTERNATIONAL),  # listed: no "we don't list"
    ("Can I pay with PayPal?", PAYMENT),
    ("Can I return shoes?", RETURNS),  # a thing, not a name: the answer as it is
    # Two questions in one message
    ("How long does shipping take and can I pay with PayPal?", answer(SHIPPING, PAYMENT)),
    ("Can I return a sale item? Also how do I track my parcel?", answer(RETURNS, TRACKING)),
    ("What is your return policy and do you ship to Austria?", answer(RETURNS, INTERNATIONAL)),
    ("how much is express shipping and can I cancel my order later", answer(SHIPPING, CHANGE)),
    # Anyone there?
    ("hello?", OFFER),
    ("Hello, anyone there?", OFFER),
    ("is anybody there", OFFER),
    ("are you a bot?", OFFER),
    ("I want to talk to a human", PERSON),
]


# German customers, answered from knowledge/faq.de.md (the headings there). Written as German
# customers write: du and Sie, no umlauts on a phone keyboard ("Rueckgabe"), compounds, typos.
DE_RETURNS = "Wie sind Ihre Rückgaberegeln?"
DE_SHIPPING = "Wie lange dauert der Versand?"
DE_INTERNATIONAL = "Liefern Sie ins Ausland?"
DE_TRACKING = "Wie kann ich meine Bestellung verfolgen?"
DE_PAYMENT = "Welche Zahlungsarten akzeptieren Sie?"
DE_CHANGE = "Kann ich meine Bestellung ändern oder stornieren?"
DE_DAMAGED = "Mein Artikel kam beschädigt oder falsch an. Was tue ich?"

GERMAN = [
    ("Kann ich die Schuhe zurückschicken, wenn sie nicht passen?", DE_RETURNS),
    ("Wie bekomme ich mein Geld zurück?", DE_RETURNS),
    ("Ich möchte eine Rücksendung machen", DE_RETURNS),
    ("Kann ich einen reduzierten Artikel umtauschen?", DE_RETURNS),
    ("Wie lange dauert die Lieferung?", DE_SHIPPING),
    ("Was kostet der Versand?", DE_SHIPPING),
    ("Gibt es Expressversand?", DE_SHIPPING),
    ("Liefert ihr auch nach Österreich?", DE_INTERNATIONAL),
    ("Muss ich in der Schweiz Zoll zahlen?", DE_INTERNATIONAL),
    ("Wo ist meine Bestellung?", DE_TRACKING),
    ("Mein Paket ist noch nicht angekommen", DE_TRACKING),
    ("Wo finde ich die Sendungsnummer?", DE_TRACKING),
    ("Kann ich mit PayPal bezahlen?", DE_PAYMENT),
    ("Wann wird das Geld abgebucht?", DE_PAYMENT),
    ("Ich habe aus Versehen bestellt, kann ich stornieren?", DE_CHANGE),
    ("Ich muss die Lieferadresse ändern", DE_CHANGE),
    ("Der Artikel ist kaputt angekommen", DE_DAMAGED),
    ("Ich habe die falsche Farbe bekommen", DE_DAMAGED),
    ("Wie ist Ihre Telefonnummer?", CONTACT),
    ("Habt ihr am Samstag geöffnet?", CONTACT),
    ("Wie wird das Wetter morgen?", FALLBACK),
    ("Verkauft ihr auch Fahrräder?", FALLBACK),
]


# French, Spanish and Arabic customers, for whom the shop wrote no file: answered from
# knowledge/faq.md through each language's glossary (languages.py), with the note.
ELSEWHERE = [
    ("fr", "Quelle est votre politique de retour ?", RETURNS),
    ("fr", "Combien de temps prend la livraison ?", SHIPPING),
    ("fr", "Livrez-vous en Belgique ?", INTERNATIONAL),
    ("fr", "Où est mon colis ?", TRACKING),
    ("fr", "Puis-je payer avec PayPal ?", PAYMENT),
    ("fr", "Je veux annuler ma commande", CHANGE),
    ("es", "¿Cuánto tarda el envío?", SHIPPING),
    ("es", "Quiero devolver un pedido", RETURNS),
    ("es", "¿Puedo pagar con tarjeta?", PAYMENT),
    ("es", "El producto llegó roto", DAMAGED),
    ("ar", "ما هي سياسة الإرجاع؟", RETURNS),
    ("ar", "كم يستغرق الشحن؟", SHIPPING),
    ("ar", "أريد إلغاء طلبي", CHANGE),
    ("ar", "ما هو رقم الهاتف؟", CONTACT),
]


def evaluate_elsewhere(questions=ELSEWHERE) -> tuple[float, list[tuple[str, str, str]]]:
    misses = [(q, expected, got) for language, q, expected in questions if (got := classify(q, language)) != expected]
    return 1 - len(misses) / len(questions), misses


def describe(question: str) -> str:
    """The offline responder's whole answer to `question`, named as in REALISTIC."""
    from conversations import knowledge

    if knowledge.wants_person(question):
        return PERSON
    if knowledge.asks_if_anyone_there(question):
        return OFFER
    reply = knowledge.offline_answer(question)
    parts = [APOLOGY] if reply.startswith("I'm sorry about this.") else []
    if "We don't list " in reply:
        parts.append(UNLISTED)
    contact = knowledge.contact_details()
    found = sorted((reply.index(entry.answer), entry.question) for entry in knowledge.entries() if entry.answer in reply)
    if reply.find("You can reach us here:") >= 0 and contact:
        found.append((reply.index("You can reach us here:"), CONTACT))
    parts += [name for _, name in sorted(found)] or [FALLBACK]
    return answer(*parts)


def evaluate_answers(messages=REALISTIC) -> tuple[float, list[tuple[str, str, str]]]:
    """The share of `messages` whose whole answer is as expected, and each miss as (message, expected, got)."""
    misses = [(m, expected, got) for m, expected in messages if (got := describe(m)) != expected]
    return 1 - len(misses) / len(messages), misses


def classify(question: str, language: str = "en") -> str:
    """What the offline responder does with `question` asked in `language`, named as in QUESTIONS."""
    from conversations import knowledge

    if knowledge.wants_person(question):
        return PERSON
    entry = knowledge.match(question, language)
    return FALLBACK if entry is None else entry.question


def evaluate(questions=QUESTIONS, language: str = "en") -> tuple[float, list[tuple[str, str, str]]]:
    """The share of `questions` answered right, and each miss as (question, expected, got)."""
    misses = [(q, expected, got) for q, expected in questions if (got := classify(q, language)) != expected]
    return 1 - len(misses) / len(questions), misses


def evaluate_german(questions=GERMAN) -> tuple[float, list[tuple[str, str, str]]]:
    return evaluate(questions, "de")


def main() -> None:
    import os
    import time

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "faq-eval-only")
    django.setup()
    from conversations import knowledge

    knowledge.entries()  # read and index the files once, as the site does on its first question
    knowledge.entries("de")
    for name, questions, measure in (("QUESTIONS", QUESTIONS, evaluate), ("UNSEEN", UNSEEN, evaluate),
                                     ("REALISTIC (whole answers)", REALISTIC, evaluate_answers),
                                     ("GERMAN (from faq.de.md)", GERMAN, evaluate_german),
                                     ("FR/ES/AR (from faq.md, with the note)", ELSEWHERE, evaluate_elsewhere)):
        started = time.perf_counter()
        share, misses = measure(questions)
        per_question = (time.perf_counter() - started) / len(questions)
        for question, expected, got in misses:
            print(f"MISS {question!r}\n     expected {expected}\n     got      {got}")
        right = len(questions) - len(misses)
        print(
            f"{name}: {right}/{len(questions)} answered right ({share:.0%}); "
            f"{per_question * 1e6:.0f} µs a question (first sight of each word included)\n"
        )


if __name__ == "__main__":
    main()
