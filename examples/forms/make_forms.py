#!/usr/bin/env python3
"""Writes Tejido's demo XLSForms, in Spanish and English:

- victimizacion_hogares.xlsx: household victimization and perception-of-insecurity survey;
- bitacora_red_juvenil.xlsx: youth-network activity log.

Run from anywhere: `pip install openpyxl && python3 examples/forms/make_forms.py`. The .xlsx
files are committed beside this script; regenerate them after editing it.
"""

from pathlib import Path

from openpyxl import Workbook

HERE = Path(__file__).resolve().parent
ES = "label::Español (es)"
EN = "label::English (en)"
HINT_ES = "hint::Español (es)"
HINT_EN = "hint::English (en)"
CMSG_ES = "constraint_message::Español (es)"
CMSG_EN = "constraint_message::English (en)"

SURVEY_COLUMNS = [
    "type", "name", ES, EN, HINT_ES, HINT_EN, "required", "relevant", "constraint",
    CMSG_ES, CMSG_EN, "calculation", "choice_filter", "appearance", "default",
]


def q(type_, name, es="", en="", **extra):
    row = {"type": type_, "name": name, ES: es, EN: en}
    for key, value in extra.items():
        column = {
            "hint_es": HINT_ES, "hint_en": HINT_EN, "msg_es": CMSG_ES, "msg_en": CMSG_EN,
        }.get(key, key)
        row[column] = value
    return row


def end(kind):
    return {"type": f"end_{kind}"}


# Districts and corregimientos of the observatory's area, for cascading choices.
DISTRICTS = [
    ("panama", "Panamá", "Panama"),
    ("san_miguelito", "San Miguelito", "San Miguelito"),
    ("arraijan", "Arraiján", "Arraiján"),
    ("la_chorrera", "La Chorrera", "La Chorrera"),
]
CORREGIMIENTOS = {
    "panama": ["San Felipe", "Calidonia", "Bella Vista", "Curundú", "Juan Díaz", "Pedregal", "Tocumen",
               "24 de Diciembre", "Pacora"],
    "san_miguelito": ["Amelia Denis de Icaza", "Belisario Porras", "José Domingo Espinar", "Mateo Iturralde",
                      "Victoriano Lorenzo", "Arnulfo Arias", "Belisario Frías", "Omar Torrijos", "Rufina Alfaro"],
    "arraijan": ["Arraiján Cabecera", "Juan Demóstenes Arosemena", "Nuevo Emperador", "Santa Clara", "Veracruz",
                 "Vista Alegre", "Burunga", "Cerro Silvestre"],
    "la_chorrera": ["Barrio Balboa", "Barrio Colón", "Guadalupe", "El Coco", "Herrera", "Playa Leona",
                    "Puerto Caimito", "Feuillet"],
}


def slug(text):
    table = str.maketrans("áéíóúñÁÉÍÓÚÑ ", "aeiounAEIOUN_")
    return "".join(c for c in text.translate(table).lower() if c.isalnum() or c == "_")


def place_choices():
    rows = [("district", code, es, en, {}) for code, es, en in DISTRICTS]
    for district, names in CORREGIMIENTOS.items():
        for name in names:
            rows.append(("corregimiento", f"{district[:3]}_{slug(name)}", name, name, {"district": district}))
    return rows


def write(path, title, form_id, version, survey, choices, instance_name):
    wb = Workbook()
    ws = wb.active
    ws.title = "survey"
    ws.append(SURVEY_COLUMNS)
    for row in survey:
        ws.append([row.get(c, "") for c in SURVEY_COLUMNS])
    extra_columns = sorted({k for *_, extra in choices for k in extra})
    cs = wb.create_sheet("choices")
    cs.append(["list_name", "name", ES, EN] + extra_columns)
    for list_name, name, es, en, extra in choices:
        cs.append([list_name, name, es, en] + [extra.get(c, "") for c in extra_columns])
    st = wb.create_sheet("settings")
    st.append(["form_title", "form_id", "version", "default_language", "instance_name"])
    st.append([title, form_id, version, "Español (es)", instance_name])
    wb.save(path)


YES_NO = [("yes_no", "yes", "Sí", "Yes", {}), ("yes_no", "no", "No", "No", {})]

METADATA = [q("start", "start"), q("end", "end"), q("today", "today"), q("deviceid", "deviceid"),
            q("username", "username")]


def victimization():
    survey = METADATA + [
        q("note", "intro",
          "Encuesta de victimización y percepción de inseguridad. Sus respuestas son confidenciales.",
          "Victimization and perception-of-insecurity survey. Your answers are confidential."),
        q("select_one yes_no", "consent", "¿Acepta participar en esta encuesta?",
          "Do you agree to take part in this survey?", required="yes"),
        q("begin_group", "survey", "Encuesta", "Survey", relevant="${consent} = 'yes'"),

        q("begin_group", "location", "Ubicación del hogar", "Household location"),
        q("select_one district", "district", "Distrito", "District", required="yes"),
        q("select_one corregimiento", "corregimiento", "Corregimiento", "Corregimiento", required="yes",
          choice_filter="district = ${district}"),
        q("geopoint", "home_gps", "Ubicación GPS de la vivienda", "GPS location of the dwelling"),
        end("group"),

        q("integer", "household_size", "¿Cuántas personas viven en este hogar?",
          "How many people live in this household?", required="yes", constraint=". >= 1 and . <= 30",
          msg_es="Debe ser entre 1 y 30 personas.", msg_en="Must be between 1 and 30 people."),
        q("begin_repeat", "roster", "Miembros del hogar", "Household members"),
        q("text", "member_name", "Nombre (o iniciales)", "Name (or initials)", required="yes"),
        q("select_one sex", "member_sex", "Sexo", "Sex", required="yes"),
        q("integer", "member_age", "Edad", "Age", required="yes", constraint=". >= 0 and . <= 120",
          msg_es="La edad debe estar entre 0 y 120.", msg_en="Age must be between 0 and 120."),
        q("select_one relationship", "member_relationship", "Relación con el jefe del hogar",
          "Relationship to the head of household"),
        end("repeat"),
        q("calculate", "members_listed", calculation="count(${roster})"),
        q("note", "roster_check", "Miembros registrados: ${members_listed} de ${household_size}",
          "Members listed: ${members_listed} of ${household_size}"),

        q("begin_group", "perception", "Percepción de inseguridad en el barrio",
          "Perceived insecurity in the neighbourhood"),
        q("select_one safety", "safe_day", "¿Qué tan seguro(a) se siente caminando solo(a) de día en su barrio?",
          "How safe do you feel walking alone in your neighbourhood during the day?", required="yes"),
        q("select_one safety", "safe_night", "¿Y de noche?", "And at night?", required="yes"),
        q("select_multiple problems", "problems", "¿Cuáles de estos problemas hay en su barrio?",
          "Which of these problems are there in your neighbourhood?",
          constraint="not(selected(., 'none') and count-selected(.) > 1)",
          msg_es="'Ninguno' no puede combinarse con otras opciones.",
          msg_en="'None' cannot be combined with other options."),
        q("select_one yes_no", "avoids_places", "¿Evita ciertos lugares de su barrio por miedo al delito?",
          "Do you avoid certain places in your neighbourhood for fear of crime?"),
        end("group"),

        q("begin_group", "victimization", "Victimización en los últimos 12 meses",
          "Victimization in the last 12 months"),
        q("select_multiple crimes", "crimes", "En los últimos 12 meses, ¿usted o alguien de su hogar sufrió alguno de estos delitos?",
          "In the last 12 months, did you or anyone in your household suffer any of these crimes?",
          required="yes", constraint="not(selected(., 'none') and count-selected(.) > 1)",
          msg_es="'Ninguno' no puede combinarse con otros delitos.",
          msg_en="'None' cannot be combined with other crimes."),
        q("begin_group", "crime_followup", "El delito más reciente", "The most recent crime",
          relevant="count-selected(${crimes}) > 0 and not(selected(${crimes}, 'none'))"),
        q("select_one recent_crime", "recent_crime", "¿Cuál fue el delito más reciente?",
          "Which was the most recent crime?", required="yes",
          choice_filter="selected(${crimes}, name)"),
        q("select_one months", "crime_when", "¿Hace cuánto ocurrió?", "How long ago did it happen?",
          required="yes"),
        q("select_one crime_place", "crime_where", "¿Dónde ocurrió?", "Where did it happen?", required="yes"),
        q("select_one yes_no", "reported", "¿Lo denunció a la policía?", "Did you report it to the police?",
          required="yes"),
        q("select_multiple no_report", "why_not_reported", "¿Por qué no lo denunció?",
          "Why did you not report it?", required="yes", relevant="${reported} = 'no'"),
        q("text", "why_not_other", "Otra razón", "Other reason", required="yes",
          relevant="selected(${why_not_reported}, 'other')"),
        end("group"),
        end("group"),

        q("select_one yes_no", "respondent_alone",
          "(Encuestador/a) ¿Está la persona entrevistada sola, sin nadie que pueda escuchar?",
          "(Enumerator) Is the respondent alone, with nobody able to overhear?", required="yes"),
        q("select_one yes_no", "dv_consent",
          "Las siguientes preguntas son privadas. ¿Acepta responderlas?",
          "The next questions are private. Do you agree to answer them?",
          required="yes", relevant="${respondent_alone} = 'yes'"),
        q("begin_group", "domestic_violence", "Módulo privado: violencia en el hogar",
          "Private module: violence at home",
          relevant="${respondent_alone} = 'yes' and ${dv_consent} = 'yes'"),
        q("select_one yes_no", "dv_physical",
          "En los últimos 12 meses, ¿alguien de su hogar le golpeó o lastimó físicamente?",
          "In the last 12 months, did anyone in your household hit or physically hurt you?", required="yes"),
        q("select_one yes_no", "dv_psychological",
          "¿Alguien de su hogar le insultó, amenazó o humilló de forma repetida?",
          "Did anyone in your household repeatedly insult, threaten or humiliate you?", required="yes"),
        q("select_one yes_no", "dv_help", "¿Buscó ayuda?", "Did you seek help?",
          relevant="${dv_physical} = 'yes' or ${dv_psychological} = 'yes'"),
        q("note", "dv_resources",
          "Si necesita ayuda, puede llamar a la línea 182 (Ministerio de la Mujer).",
          "If you need help, you can call line 182 (Ministry of Women)."),
        end("group"),
        q("calculate", "victim", calculation="if(count-selected(${crimes}) > 0 and not(selected(${crimes}, 'none')), 1, 0)"),
        end("group"),
    ]
    crimes = [
        ("robbery", "Robo con violencia o amenaza", "Robbery with violence or threat"),
        ("theft", "Hurto (sin violencia)", "Theft (without violence)"),
        ("burglary", "Robo en la vivienda", "Burglary"),
        ("vehicle_theft", "Robo de vehículo o de sus partes", "Vehicle or vehicle parts theft"),
        ("assault", "Agresión física", "Physical assault"),
        ("extortion", "Extorsión", "Extortion"),
        ("fraud", "Estafa", "Fraud"),
        ("threats", "Amenazas", "Threats"),
        ("sexual_violence", "Violencia sexual", "Sexual violence"),
    ]
    choices = YES_NO + place_choices() + [
        ("sex", "female", "Mujer", "Female", {}), ("sex", "male", "Hombre", "Male", {}),
        ("relationship", "head", "Jefe(a) del hogar", "Head of household", {}),
        ("relationship", "spouse", "Cónyuge", "Spouse", {}),
        ("relationship", "child", "Hijo(a)", "Child", {}),
        ("relationship", "other_relative", "Otro pariente", "Other relative", {}),
        ("relationship", "non_relative", "No pariente", "Not related", {}),
        ("safety", "very_safe", "Muy seguro(a)", "Very safe", {}),
        ("safety", "safe", "Seguro(a)", "Safe", {}),
        ("safety", "unsafe", "Inseguro(a)", "Unsafe", {}),
        ("safety", "very_unsafe", "Muy inseguro(a)", "Very unsafe", {}),
        ("problems", "drugs", "Venta o consumo de drogas", "Drug dealing or use", {}),
        ("problems", "gangs", "Pandillas", "Gangs", {}),
        ("problems", "robberies", "Robos frecuentes", "Frequent robberies", {}),
        ("problems", "poor_lighting", "Poca iluminación", "Poor street lighting", {}),
        ("problems", "vandalism", "Vandalismo", "Vandalism", {}),
        ("problems", "none", "Ninguno", "None", {}),
    ] + [("crimes", n, es, en, {}) for n, es, en in crimes] + [
        ("crimes", "none", "Ninguno", "None", {}),
    ] + [("recent_crime", n, es, en, {}) for n, es, en in crimes] + [
        ("months", "0_3", "Hace menos de 3 meses", "Less than 3 months ago", {}),
        ("months", "3_6", "Entre 3 y 6 meses", "3 to 6 months ago", {}),
        ("months", "6_12", "Entre 6 y 12 meses", "6 to 12 months ago", {}),
        ("crime_place", "home", "En la vivienda", "At home", {}),
        ("crime_place", "street", "En la calle", "In the street", {}),
        ("crime_place", "transport", "En el transporte público", "On public transport", {}),
        ("crime_place", "work_school", "En el trabajo o la escuela", "At work or school", {}),
        ("crime_place", "business", "En un comercio", "In a shop", {}),
        ("crime_place", "other", "Otro lugar", "Elsewhere", {}),
        ("no_report", "not_serious", "No era grave", "It was not serious", {}),
        ("no_report", "no_trust", "No confía en la policía", "Does not trust the police", {}),
        ("no_report", "fear", "Miedo a represalias", "Fear of retaliation", {}),
        ("no_report", "no_proof", "No tenía pruebas", "Had no evidence", {}),
        ("no_report", "too_slow", "Es un trámite largo", "The process takes too long", {}),
        ("no_report", "other", "Otra razón", "Other reason", {}),
    ]
    write(HERE / "victimizacion_hogares.xlsx", "Encuesta de victimización y percepción de inseguridad",
          "victimizacion_hogares", "2026112901", survey, choices,
          "concat('Hogar ', ${corregimiento}, ' ', ${today})")


def activity_log():
    parts = [
        ("women_under_18", "Mujeres menores de 18", "Women under 18"),
        ("women_18_29", "Mujeres de 18 a 29", "Women 18 to 29"),
        ("women_30_plus", "Mujeres de 30 o más", "Women 30 and over"),
        ("men_under_18", "Hombres menores de 18", "Men under 18"),
        ("men_18_29", "Hombres de 18 a 29", "Men 18 to 29"),
        ("men_30_plus", "Hombres de 30 o más", "Men 30 and over"),
    ]
    part_sum = " + ".join(f"coalesce(${{{n}}}, 0)" for n, _, _ in parts)
    survey = METADATA + [
        q("select_one activity_type", "activity_type", "Tipo de actividad", "Activity type", required="yes"),
        q("text", "activity_type_other", "¿Qué tipo de actividad?", "What kind of activity?", required="yes",
          relevant="${activity_type} = 'other'"),
        q("text", "activity_name", "Nombre de la actividad", "Activity name", required="yes"),
        q("date", "activity_date", "Fecha", "Date", required="yes", constraint=". <= today()",
          msg_es="La fecha no puede estar en el futuro.", msg_en="The date cannot be in the future."),
        q("select_one district", "district", "Distrito", "District", required="yes"),
        q("select_one corregimiento", "corregimiento", "Corregimiento", "Corregimiento", required="yes",
          choice_filter="district = ${district}"),
        q("text", "place", "Lugar (escuela, parque, cancha…)", "Place (school, park, court…)", required="yes"),
        q("geopoint", "place_gps", "Ubicación GPS", "GPS location", required="yes"),
        q("select_multiple topics", "topics", "Temas tratados", "Topics covered", required="yes"),
        q("begin_group", "attendance", "Asistencia por sexo y grupo de edad", "Attendance by sex and age group",
          appearance="field-list"),
    ] + [
        q("integer", n, es, en, required="yes", constraint=". >= 0",
          msg_es="No puede ser negativo.", msg_en="Cannot be negative.")
        for n, es, en in parts
    ] + [
        q("calculate", "attendance_sum", calculation=part_sum),
        q("integer", "total_attendees", "Total de asistentes", "Total attendees", required="yes",
          constraint=". = ${attendance_sum}",
          msg_es="La suma por sexo y edad (${attendance_sum}) debe ser igual al total.",
          msg_en="The parts by sex and age (${attendance_sum}) must add up to the total.",
          hint_es="Debe coincidir con la suma de los grupos.", hint_en="Must equal the sum of the groups."),
        q("calculate", "women_share", calculation="if(${total_attendees} > 0, round(100 * (coalesce(${women_under_18}, 0) + coalesce(${women_18_29}, 0) + coalesce(${women_30_plus}, 0)) div ${total_attendees}, 1), '')"),
        end("group"),
        q("image", "photo_1", "Foto 1", "Photo 1", required="yes"),
        q("image", "photo_2", "Foto 2", "Photo 2"),
        q("image", "photo_3", "Foto 3", "Photo 3"),
        q("text", "notes", "Observaciones", "Notes", appearance="multiline"),
    ]
    choices = place_choices() + [
        ("activity_type", "workshop", "Taller", "Workshop", {}),
        ("activity_type", "campaign", "Campaña de sensibilización", "Awareness campaign", {}),
        ("activity_type", "public_space", "Recuperación de espacio público", "Reclaiming a public space", {}),
        ("activity_type", "sports_culture", "Actividad deportiva o cultural", "Sports or cultural activity", {}),
        ("activity_type", "meeting", "Reunión de la red", "Network meeting", {}),
        ("activity_type", "other", "Otra", "Other", {}),
        ("topics", "gender", "Género", "Gender", {}),
        ("topics", "public_safety", "Seguridad ciudadana", "Public safety", {}),
        ("topics", "human_rights", "Derechos humanos", "Human rights", {}),
        ("topics", "culture_of_peace", "Cultura de paz", "Culture of peace", {}),
        ("topics", "public_spaces", "Espacios públicos", "Public spaces", {}),
    ]
    write(HERE / "bitacora_red_juvenil.xlsx", "Bitácora de actividades de la red juvenil",
          "bitacora_red_juvenil", "2026112901", survey, choices,
          "concat(${activity_date}, ' ', ${activity_name})")


if __name__ == "__main__":
    victimization()
    activity_log()
