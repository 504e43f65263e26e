//! The web app's words, in Spanish (the default: the observatories are in Panama) and English.

/// A language of the pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Es,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s.trim().to_ascii_lowercase().get(..2) {
            Some("es") => Some(Lang::Es),
            Some("en") => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Es => "es",
            Lang::En => "en",
        }
    }

    pub fn other(self) -> Lang {
        match self {
            Lang::Es => Lang::En,
            Lang::En => Lang::Es,
        }
    }

    /// A word or phrase of the pages.
    pub fn t(self, key: Key) -> &'static str {
        let (es, en) = words(key);
        match self {
            Lang::Es => es,
            Lang::En => en,
        }
    }
}

/// Every phrase of the pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    AppName,
    SignIn,
    SignOut,
    Email,
    Password,
    WrongLogin,
    Throttled,
    Projects,
    NoProjects,
    Submissions,
    Form,
    Any,
    ReviewState,
    Pending,
    Approved,
    HasIssues,
    Author,
    From,
    To,
    Flag,
    Question,
    Value,
    Filter,
    Received,
    Conflicts,
    Flags,
    Next,
    NoSubmissions,
    Answers,
    History,
    Comments,
    NoComments,
    Review,
    Comment,
    Save,
    Deleted,
    Draft,
    Written,
    Writer,
    Open,
    Replaced,
    Resolve,
    KeepThis,
    Language,
    NotFound,
    BadCsrf,
    Busy,
    Reviewed,
    Resolved,
    Row,
    Duration,
    Seconds,
    FlagConflicts,
    FlagEditedAfterDelete,
    FlagClockFarOff,
    FlagShortInterview,
    FlagRequiredMissing,
    ReviewQueue,
    Indicators,
    NoIndicators,
    Suppressed,
    Category,
    Numerator,
    Denominator,
    Estimate,
    Interval,
    ApprovedOnly,
    ApprovedOnlyOn,
    AdminsOnly,
    Edit,
    Export,
    WithLabels,
}

fn words(key: Key) -> (&'static str, &'static str) {
    use Key::*;
    match key {
        AppName => ("Tejido", "Tejido"),
        SignIn => ("Iniciar sesión", "Sign in"),
        SignOut => ("Cerrar sesión", "Sign out"),
        Email => ("Correo electrónico", "Email"),
        Password => ("Contraseña", "Password"),
        WrongLogin => ("El correo o la contraseña no son correctos.", "The email or password is wrong."),
        Throttled => (
            "Demasiados intentos fallidos. Vuelva a intentarlo en unos segundos.",
            "Too many failed attempts. Try again in a few seconds.",
        ),
        Projects => ("Proyectos", "Projects"),
        NoProjects => ("Su cuenta no pertenece a ningún proyecto.", "Your account belongs to no project."),
        Submissions => ("Envíos", "Submissions"),
        Form => ("Formulario", "Form"),
        Any => ("Todos", "Any"),
        ReviewState => ("Revisión", "Review"),
        Pending => ("Por revisar", "Waiting for review"),
        Approved => ("Aprobado", "Approved"),
        HasIssues => ("Con problemas", "Has issues"),
        Author => ("Dispositivo", "Device"),
        From => ("Desde", "From"),
        To => ("Hasta", "To"),
        Flag => ("Alerta", "Flag"),
        Question => ("Pregunta", "Question"),
        Value => ("Valor", "Value"),
        Filter => ("Filtrar", "Filter"),
        Received => ("Recibido", "Received"),
        Conflicts => ("Conflictos", "Conflicts"),
        Flags => ("Alertas", "Flags"),
        Next => ("Siguientes", "Next"),
        NoSubmissions => ("Ningún envío coincide.", "No submission matches."),
        Answers => ("Respuestas", "Answers"),
        History => ("Historial", "History"),
        Comments => ("Comentarios", "Comments"),
        NoComments => ("Sin comentarios.", "No comments."),
        Review => ("Revisar", "Review"),
        Comment => ("Comentario", "Comment"),
        Save => ("Guardar", "Save"),
        Deleted => ("Eliminado", "Deleted"),
        Draft => ("Borrador", "Draft"),
        Written => ("Escrito", "Written"),
        Writer => ("Por", "By"),
        Open => ("abierto", "open"),
        Replaced => ("reemplazado", "replaced"),
        Resolve => ("Resolver", "Resolve"),
        KeepThis => ("Quedarse con este valor", "Keep this value"),
        Language => ("English", "Español"),
        NotFound => ("No existe.", "Not found."),
        Busy => (
            "El servidor está ocupado (otras exportaciones en curso). Inténtelo de nuevo en un momento.",
            "The server is busy (other exports are running). Try again in a moment.",
        ),
        BadCsrf => (
            "El formulario caducó. Vuelva a cargar la página e inténtelo de nuevo.",
            "The form expired. Reload the page and try again.",
        ),
        Reviewed => ("Revisión guardada.", "Review saved."),
        Resolved => ("Conflicto resuelto.", "Conflict resolved."),
        Row => ("Fila", "Row"),
        Duration => ("Duración", "Duration"),
        Seconds => ("s", "s"),
        FlagConflicts => ("conflictos abiertos", "open conflicts"),
        FlagEditedAfterDelete => ("editado tras eliminarse", "edited after delete"),
        FlagClockFarOff => ("reloj muy desfasado", "clock far off"),
        FlagShortInterview => ("entrevista muy corta", "interview much too short"),
        FlagRequiredMissing => ("falta una respuesta obligatoria", "a required answer is missing"),
        ReviewQueue => ("Por revisar", "Review queue"),
        Indicators => ("Indicadores", "Indicators"),
        NoIndicators => (
            "Ningún formulario de este proyecto tiene indicadores declarados.",
            "No form of this project declares indicators.",
        ),
        Suppressed => ("suprimido (pocos casos)", "suppressed (too few cases)"),
        Category => ("Categoría", "Category"),
        Numerator => ("Numerador", "Numerator"),
        Denominator => ("Denominador", "Denominator"),
        Estimate => ("Estimación", "Estimate"),
        Interval => ("IC 95 %", "95% CI"),
        ApprovedOnly => (
            "Exportaciones y API solo con envíos aprobados",
            "Exports and the API hold approved submissions only",
        ),
        ApprovedOnlyOn => ("Solo aprobados", "Approved only"),
        Edit => ("Editar", "Edit"),
        Export => ("Exportar", "Export"),
        WithLabels => ("con etiquetas", "with labels"),
        AdminsOnly => (
            "Solo quien administra el proyecto puede cambiar esto.",
            "Only the project's admins may change this.",
        ),
    }
}
