/**
 * Human-readable envelope messages in the 12 supported languages, and the choice of language
 * for a request (spec: "The response envelope").
 */
import type { ResponseCode } from "./errorCodes.ts"

export const LANGS = ["en", "es", "pt", "fr", "de", "ru", "hi", "ur", "it", "ar", "ja", "zh"] as const
export type Lang = (typeof LANGS)[number]

export const DEFAULT_LANG: Lang = "en"

export const isLang = (s: string): s is Lang => (LANGS as ReadonlyArray<string>).includes(s)

/** "pt-BR" -> "pt", "zh_Hant" -> "zh", "EN" -> "en"; undefined when not one of LANGS. */
const supportedPrimaryTag = (tag: string): Lang | undefined => {
  const trimmed = tag.trim()
  const separator = trimmed.search(/[-_]/)
  const primary = (separator < 0 ? trimmed : trimmed.slice(0, separator)).toLowerCase()
  return isLang(primary) ? primary : undefined
}

/** q-value of one Accept-Language parameter list ("q=0.8"); 1 when absent, NaN when malformed. */
const qValueOf = (params: ReadonlyArray<string>): number => {
  for (const param of params) {
    const eq = param.indexOf("=")
    if (eq < 0) continue
    if (param.slice(0, eq).trim().toLowerCase() !== "q") continue
    const raw = param.slice(eq + 1).trim()
    return /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/.test(raw) ? Number(raw) : Number.NaN
  }
  return 1
}

/**
 * A supported `?lang=` wins; then the supported Accept-Language entry with the highest q
 * (the first one among equals); else "en". An unsupported `?lang=` is ignored rather than
 * forcing English, so the header can still pick the user's language.
 */
export const negotiateLang = (
  queryLang: string | null | undefined,
  acceptLanguage: string | null | undefined
): Lang => {
  if (queryLang) {
    const fromQuery = supportedPrimaryTag(queryLang)
    if (fromQuery !== undefined) return fromQuery
  }
  if (!acceptLanguage) return DEFAULT_LANG
  let best: Lang | undefined
  let bestQ = 0
  for (const entry of acceptLanguage.split(",")) {
    const [tag = "", ...params] = entry.split(";")
    const lang = supportedPrimaryTag(tag)
    if (lang === undefined) continue
    const q = qValueOf(params)
    // q=0 means "not acceptable"; a malformed q (NaN) fails the comparison and is skipped too.
    if (q > bestQ) {
      best = lang
      bestQ = q
    }
  }
  return best ?? DEFAULT_LANG
}

type Catalogue = { readonly [C in ResponseCode]: string }

const MESSAGES: { readonly [L in Lang]: Catalogue } = {
  en: {
    OK: "Success.",
    BAD_REQUEST: "The request is invalid; check its parameters.",
    MISSING_API_KEY: "An API key is required: send it in the X-API-Key header or as a Bearer token.",
    INVALID_API_KEY: "The API key is not valid.",
    KEY_REVOKED: "This API key has been revoked.",
    KEY_EXPIRED: "This API key has expired.",
    LRS_NOT_ENABLED: "Reports are not enabled for this API key.",
    STREAM_NOT_ENABLED: "The partner stream is not enabled for this API key.",
    UNKNOWN_ASSET: "Unknown asset or quote currency.",
    NOT_FOUND: "Not found.",
    METHOD_NOT_ALLOWED: "This method is not allowed here; see the Allow header.",
    RATE_LIMITED: "Rate limit exceeded; retry after the Retry-After interval.",
    QUOTA_EXCEEDED: "Monthly quota exceeded for this API key.",
    NO_FRESH_PRICE: "No fresh price is available for this asset right now.",
    SYSTEM_BUSY: "The system is busy; please retry shortly.",
    MAINTENANCE: "The service is under maintenance; please retry later.",
    INTERNAL: "Internal server error.",
    PAYMENT_NOT_COMPLETE: "The payment is not complete yet; try again once it has gone through.",
    NO_SUBSCRIPTION: "No active subscription was found for this e-mail address; subscribe first, then add LRS."
  },
  es: {
    OK: "Operación realizada con éxito.",
    BAD_REQUEST: "La solicitud no es válida; revise sus parámetros.",
    MISSING_API_KEY: "Se requiere una clave de API: envíela en el encabezado X-API-Key o como token Bearer.",
    INVALID_API_KEY: "La clave de API no es válida.",
    KEY_REVOKED: "Esta clave de API ha sido revocada.",
    KEY_EXPIRED: "Esta clave de API ha caducado.",
    LRS_NOT_ENABLED: "Los informes no están habilitados para esta clave de API.",
    STREAM_NOT_ENABLED: "El flujo para socios no está habilitado para esta clave de API.",
    UNKNOWN_ASSET: "Activo o moneda de cotización desconocidos.",
    NOT_FOUND: "No encontrado.",
    METHOD_NOT_ALLOWED: "Este método no está permitido aquí; consulte el encabezado Allow.",
    RATE_LIMITED: "Límite de solicitudes superado; reintente tras el intervalo indicado en Retry-After.",
    QUOTA_EXCEEDED: "Se ha superado la cuota mensual de esta clave de API.",
    NO_FRESH_PRICE: "No hay un precio reciente disponible para este activo en este momento.",
    SYSTEM_BUSY: "El sistema está ocupado; vuelva a intentarlo en breve.",
    MAINTENANCE: "El servicio está en mantenimiento; vuelva a intentarlo más tarde.",
    INTERNAL: "Error interno del servidor.",
    PAYMENT_NOT_COMPLETE: "El pago aún no se ha completado; vuelva a intentarlo cuando se haya procesado.",
    NO_SUBSCRIPTION: "No se encontró ninguna suscripción activa para esta dirección de correo; suscríbase primero y luego añada LRS."
  },
  pt: {
    OK: "Operação concluída com sucesso.",
    BAD_REQUEST: "A solicitação é inválida; verifique os parâmetros.",
    MISSING_API_KEY: "É necessária uma chave de API: envie-a no cabeçalho X-API-Key ou como token Bearer.",
    INVALID_API_KEY: "A chave de API não é válida.",
    KEY_REVOKED: "Esta chave de API foi revogada.",
    KEY_EXPIRED: "Esta chave de API expirou.",
    LRS_NOT_ENABLED: "Os relatórios não estão habilitados para esta chave de API.",
    STREAM_NOT_ENABLED: "O fluxo para parceiros não está habilitado para esta chave de API.",
    UNKNOWN_ASSET: "Ativo ou moeda de cotação desconhecidos.",
    NOT_FOUND: "Não encontrado.",
    METHOD_NOT_ALLOWED: "Este método não é permitido aqui; consulte o cabeçalho Allow.",
    RATE_LIMITED: "Limite de requisições excedido; tente novamente após o intervalo indicado em Retry-After.",
    QUOTA_EXCEEDED: "A cota mensal desta chave de API foi excedida.",
    NO_FRESH_PRICE: "Nenhum preço recente está disponível para este ativo no momento.",
    SYSTEM_BUSY: "O sistema está ocupado; tente novamente em instantes.",
    MAINTENANCE: "O serviço está em manutenção; tente novamente mais tarde.",
    INTERNAL: "Erro interno do servidor.",
    PAYMENT_NOT_COMPLETE: "O pagamento ainda não foi concluído; tente novamente quando ele for processado.",
    NO_SUBSCRIPTION: "Nenhuma assinatura ativa foi encontrada para este e-mail; assine primeiro e depois adicione o LRS."
  },
  fr: {
    OK: "Opération réussie.",
    BAD_REQUEST: "La requête est invalide ; vérifiez ses paramètres.",
    MISSING_API_KEY: "Une clé d'API est requise : envoyez-la dans l'en-tête X-API-Key ou comme jeton Bearer.",
    INVALID_API_KEY: "La clé d'API n'est pas valide.",
    KEY_REVOKED: "Cette clé d'API a été révoquée.",
    KEY_EXPIRED: "Cette clé d'API a expiré.",
    LRS_NOT_ENABLED: "Les rapports ne sont pas activés pour cette clé d'API.",
    STREAM_NOT_ENABLED: "Le flux partenaire n'est pas activé pour cette clé d'API.",
    UNKNOWN_ASSET: "Actif ou devise de cotation inconnu.",
    NOT_FOUND: "Introuvable.",
    METHOD_NOT_ALLOWED: "Cette méthode n'est pas autorisée ici ; consultez l'en-tête Allow.",
    RATE_LIMITED: "Limite de débit dépassée ; réessayez après le délai indiqué par Retry-After.",
    QUOTA_EXCEEDED: "Quota mensuel dépassé pour cette clé d'API.",
    NO_FRESH_PRICE: "Aucun prix récent n'est disponible pour cet actif pour le moment.",
    SYSTEM_BUSY: "Le système est occupé ; réessayez dans un instant.",
    MAINTENANCE: "Le service est en maintenance ; réessayez plus tard.",
    INTERNAL: "Erreur interne du serveur.",
    PAYMENT_NOT_COMPLETE: "Le paiement n'est pas encore finalisé ; réessayez une fois qu'il aura abouti.",
    NO_SUBSCRIPTION: "Aucun abonnement actif n'a été trouvé pour cette adresse e-mail ; abonnez-vous d'abord, puis ajoutez LRS."
  },
  de: {
    OK: "Vorgang erfolgreich.",
    BAD_REQUEST: "Die Anfrage ist ungültig; bitte prüfen Sie die Parameter.",
    MISSING_API_KEY: "Ein API-Schlüssel ist erforderlich: Senden Sie ihn im Header X-API-Key oder als Bearer-Token.",
    INVALID_API_KEY: "Der API-Schlüssel ist ungültig.",
    KEY_REVOKED: "Dieser API-Schlüssel wurde widerrufen.",
    KEY_EXPIRED: "Dieser API-Schlüssel ist abgelaufen.",
    LRS_NOT_ENABLED: "Berichte sind für diesen API-Schlüssel nicht freigeschaltet.",
    STREAM_NOT_ENABLED: "Der Partner-Stream ist für diesen API-Schlüssel nicht freigeschaltet.",
    UNKNOWN_ASSET: "Unbekanntes Asset oder unbekannte Kurswährung.",
    NOT_FOUND: "Nicht gefunden.",
    METHOD_NOT_ALLOWED: "Diese Methode ist hier nicht erlaubt; siehe den Header Allow.",
    RATE_LIMITED: "Ratenlimit überschritten; bitte nach dem in Retry-After angegebenen Intervall erneut versuchen.",
    QUOTA_EXCEEDED: "Das Monatskontingent dieses API-Schlüssels ist ausgeschöpft.",
    NO_FRESH_PRICE: "Für dieses Asset ist derzeit kein aktueller Preis verfügbar.",
    SYSTEM_BUSY: "Das System ist ausgelastet; bitte in Kürze erneut versuchen.",
    MAINTENANCE: "Der Dienst wird gewartet; bitte später erneut versuchen.",
    INTERNAL: "Interner Serverfehler.",
    PAYMENT_NOT_COMPLETE: "Die Zahlung ist noch nicht abgeschlossen; versuchen Sie es erneut, sobald sie durchgegangen ist.",
    NO_SUBSCRIPTION: "Für diese E-Mail-Adresse wurde kein aktives Abonnement gefunden; schließen Sie zuerst ein Abonnement ab und fügen Sie dann LRS hinzu."
  },
  ru: {
    OK: "Запрос выполнен успешно.",
    BAD_REQUEST: "Некорректный запрос; проверьте параметры.",
    MISSING_API_KEY: "Требуется API-ключ: передайте его в заголовке X-API-Key или как Bearer-токен.",
    INVALID_API_KEY: "Недействительный API-ключ.",
    KEY_REVOKED: "Этот API-ключ отозван.",
    KEY_EXPIRED: "Срок действия этого API-ключа истёк.",
    LRS_NOT_ENABLED: "Отчёты для этого API-ключа не подключены.",
    STREAM_NOT_ENABLED: "Партнёрский поток для этого API-ключа не подключён.",
    UNKNOWN_ASSET: "Неизвестный актив или валюта котировки.",
    NOT_FOUND: "Не найдено.",
    METHOD_NOT_ALLOWED: "Этот метод здесь не разрешён; см. заголовок Allow.",
    RATE_LIMITED: "Превышен лимит запросов; повторите попытку через интервал, указанный в Retry-After.",
    QUOTA_EXCEEDED: "Месячная квота этого API-ключа исчерпана.",
    NO_FRESH_PRICE: "Актуальная цена для этого актива сейчас недоступна.",
    SYSTEM_BUSY: "Система перегружена; повторите попытку чуть позже.",
    MAINTENANCE: "Сервис на техническом обслуживании; повторите попытку позже.",
    INTERNAL: "Внутренняя ошибка сервера.",
    PAYMENT_NOT_COMPLETE: "Платёж ещё не завершён; повторите попытку, когда он пройдёт.",
    NO_SUBSCRIPTION: "Для этого адреса электронной почты не найдено активной подписки; сначала оформите подписку, затем добавьте LRS."
  },
  hi: {
    OK: "अनुरोध सफल रहा।",
    BAD_REQUEST: "अनुरोध अमान्य है; कृपया इसके पैरामीटर जाँचें।",
    MISSING_API_KEY: "API कुंजी आवश्यक है: इसे X-API-Key हेडर में या Bearer टोकन के रूप में भेजें।",
    INVALID_API_KEY: "API कुंजी मान्य नहीं है।",
    KEY_REVOKED: "यह API कुंजी रद्द कर दी गई है।",
    KEY_EXPIRED: "इस API कुंजी की अवधि समाप्त हो गई है।",
    LRS_NOT_ENABLED: "इस API कुंजी के लिए रिपोर्ट सक्षम नहीं हैं।",
    STREAM_NOT_ENABLED: "इस API कुंजी के लिए पार्टनर स्ट्रीम सक्षम नहीं है।",
    UNKNOWN_ASSET: "अज्ञात एसेट या कोट मुद्रा।",
    NOT_FOUND: "नहीं मिला।",
    METHOD_NOT_ALLOWED: "यहाँ यह मेथड अनुमत नहीं है; Allow हेडर देखें।",
    RATE_LIMITED: "अनुरोध सीमा पार हो गई; Retry-After में बताए गए अंतराल के बाद पुनः प्रयास करें।",
    QUOTA_EXCEEDED: "इस API कुंजी का मासिक कोटा समाप्त हो गया है।",
    NO_FRESH_PRICE: "इस एसेट के लिए अभी कोई ताज़ा मूल्य उपलब्ध नहीं है।",
    SYSTEM_BUSY: "सिस्टम व्यस्त है; कृपया थोड़ी देर में पुनः प्रयास करें।",
    MAINTENANCE: "सेवा का रखरखाव चल रहा है; कृपया बाद में पुनः प्रयास करें।",
    INTERNAL: "आंतरिक सर्वर त्रुटि।",
    PAYMENT_NOT_COMPLETE: "भुगतान अभी पूरा नहीं हुआ है; इसके पूरा होने के बाद फिर से प्रयास करें।",
    NO_SUBSCRIPTION: "इस ई-मेल पते के लिए कोई सक्रिय सदस्यता नहीं मिली; पहले सदस्यता लें, फिर LRS जोड़ें।"
  },
  ur: {
    OK: "درخواست کامیاب رہی۔",
    BAD_REQUEST: "درخواست درست نہیں ہے؛ براہ کرم اس کے پیرامیٹرز چیک کریں۔",
    MISSING_API_KEY: "API کلید درکار ہے: اسے X-API-Key ہیڈر میں یا Bearer ٹوکن کے طور پر بھیجیں۔",
    INVALID_API_KEY: "API کلید درست نہیں ہے۔",
    KEY_REVOKED: "یہ API کلید منسوخ کر دی گئی ہے۔",
    KEY_EXPIRED: "اس API کلید کی میعاد ختم ہو چکی ہے۔",
    LRS_NOT_ENABLED: "اس API کلید کے لیے رپورٹس فعال نہیں ہیں۔",
    STREAM_NOT_ENABLED: "اس API کلید کے لیے پارٹنر اسٹریم فعال نہیں ہے۔",
    UNKNOWN_ASSET: "نامعلوم اثاثہ یا کوٹ کرنسی۔",
    NOT_FOUND: "نہیں ملا۔",
    METHOD_NOT_ALLOWED: "یہاں یہ طریقہ اجازت یافتہ نہیں؛ Allow ہیڈر دیکھیں۔",
    RATE_LIMITED: "درخواستوں کی حد سے تجاوز ہو گیا؛ Retry-After میں بتائے گئے وقفے کے بعد دوبارہ کوشش کریں۔",
    QUOTA_EXCEEDED: "اس API کلید کا ماہانہ کوٹہ ختم ہو گیا ہے۔",
    NO_FRESH_PRICE: "اس اثاثے کی کوئی تازہ قیمت اس وقت دستیاب نہیں ہے۔",
    SYSTEM_BUSY: "سسٹم مصروف ہے؛ براہ کرم تھوڑی دیر بعد دوبارہ کوشش کریں۔",
    MAINTENANCE: "سروس کی دیکھ بھال جاری ہے؛ براہ کرم بعد میں دوبارہ کوشش کریں۔",
    INTERNAL: "سرور کی اندرونی خرابی۔",
    PAYMENT_NOT_COMPLETE: "ادائیگی ابھی مکمل نہیں ہوئی؛ مکمل ہونے کے بعد دوبارہ کوشش کریں۔",
    NO_SUBSCRIPTION: "اس ای میل پتے کے لیے کوئی فعال سبسکرپشن نہیں ملی؛ پہلے سبسکرائب کریں، پھر LRS شامل کریں۔"
  },
  it: {
    OK: "Operazione completata con successo.",
    BAD_REQUEST: "La richiesta non è valida; controlla i parametri.",
    MISSING_API_KEY: "È richiesta una chiave API: inviala nell'intestazione X-API-Key o come token Bearer.",
    INVALID_API_KEY: "La chiave API non è valida.",
    KEY_REVOKED: "Questa chiave API è stata revocata.",
    KEY_EXPIRED: "Questa chiave API è scaduta.",
    LRS_NOT_ENABLED: "I report non sono abilitati per questa chiave API.",
    STREAM_NOT_ENABLED: "Lo stream per i partner non è abilitato per questa chiave API.",
    UNKNOWN_ASSET: "Asset o valuta di quotazione sconosciuti.",
    NOT_FOUND: "Non trovato.",
    METHOD_NOT_ALLOWED: "Questo metodo non è consentito qui; vedere l'intestazione Allow.",
    RATE_LIMITED: "Limite di richieste superato; riprova dopo l'intervallo indicato in Retry-After.",
    QUOTA_EXCEEDED: "Quota mensile superata per questa chiave API.",
    NO_FRESH_PRICE: "Al momento non è disponibile un prezzo aggiornato per questo asset.",
    SYSTEM_BUSY: "Il sistema è occupato; riprova tra poco.",
    MAINTENANCE: "Il servizio è in manutenzione; riprova più tardi.",
    INTERNAL: "Errore interno del server.",
    PAYMENT_NOT_COMPLETE: "Il pagamento non è ancora completato; riprova quando sarà andato a buon fine.",
    NO_SUBSCRIPTION: "Nessun abbonamento attivo trovato per questo indirizzo e-mail; abbonati prima, poi aggiungi LRS."
  },
  ar: {
    OK: "تمت العملية بنجاح.",
    BAD_REQUEST: "الطلب غير صالح؛ تحقق من معاملاته.",
    MISSING_API_KEY: "مفتاح API مطلوب: أرسله في الترويسة X-API-Key أو كرمز Bearer.",
    INVALID_API_KEY: "مفتاح API غير صالح.",
    KEY_REVOKED: "تم إلغاء مفتاح API هذا.",
    KEY_EXPIRED: "انتهت صلاحية مفتاح API هذا.",
    LRS_NOT_ENABLED: "التقارير غير مفعّلة لمفتاح API هذا.",
    STREAM_NOT_ENABLED: "بث الشركاء غير مفعّل لمفتاح API هذا.",
    UNKNOWN_ASSET: "أصل أو عملة تسعير غير معروفة.",
    NOT_FOUND: "غير موجود.",
    METHOD_NOT_ALLOWED: "هذه الطريقة غير مسموح بها هنا؛ راجع الترويسة Allow.",
    RATE_LIMITED: "تم تجاوز حد معدل الطلبات؛ أعد المحاولة بعد المهلة المحددة في Retry-After.",
    QUOTA_EXCEEDED: "تم تجاوز الحصة الشهرية لمفتاح API هذا.",
    NO_FRESH_PRICE: "لا يتوفر سعر حديث لهذا الأصل حاليًا.",
    SYSTEM_BUSY: "النظام مشغول؛ يرجى إعادة المحاولة بعد قليل.",
    MAINTENANCE: "الخدمة قيد الصيانة؛ يرجى إعادة المحاولة لاحقًا.",
    INTERNAL: "خطأ داخلي في الخادم.",
    PAYMENT_NOT_COMPLETE: "لم يكتمل الدفع بعد؛ أعد المحاولة بعد إتمامه.",
    NO_SUBSCRIPTION: "لم يُعثر على اشتراك نشط لهذا البريد الإلكتروني؛ اشترك أولاً ثم أضف LRS."
  },
  ja: {
    OK: "正常に処理されました。",
    BAD_REQUEST: "リクエストが不正です。パラメーターを確認してください。",
    MISSING_API_KEY: "API キーが必要です。X-API-Key ヘッダーまたは Bearer トークンで送信してください。",
    INVALID_API_KEY: "API キーが無効です。",
    KEY_REVOKED: "この API キーは取り消されています。",
    KEY_EXPIRED: "この API キーは有効期限が切れています。",
    LRS_NOT_ENABLED: "この API キーではレポート機能が有効になっていません。",
    STREAM_NOT_ENABLED: "この API キーではパートナーストリームが有効になっていません。",
    UNKNOWN_ASSET: "不明な銘柄または建値通貨です。",
    NOT_FOUND: "見つかりません。",
    METHOD_NOT_ALLOWED: "このメソッドはここでは使用できません。Allow ヘッダーを参照してください。",
    RATE_LIMITED: "レート制限を超えました。Retry-After で示された時間が経過してから再試行してください。",
    QUOTA_EXCEEDED: "この API キーの月間クォータを超えました。",
    NO_FRESH_PRICE: "現在、この銘柄の最新価格は利用できません。",
    SYSTEM_BUSY: "システムが混雑しています。しばらくしてから再試行してください。",
    MAINTENANCE: "サービスはメンテナンス中です。後ほど再試行してください。",
    INTERNAL: "サーバー内部エラーが発生しました。",
    PAYMENT_NOT_COMPLETE: "支払いはまだ完了していません。完了してから再度お試しください。",
    NO_SUBSCRIPTION: "このメールアドレスの有効なサブスクリプションが見つかりません。先にサブスクリプションを購入してから LRS を追加してください。"
  },
  zh: {
    OK: "请求成功。",
    BAD_REQUEST: "请求无效，请检查参数。",
    MISSING_API_KEY: "需要 API 密钥：请通过 X-API-Key 请求头或 Bearer 令牌发送。",
    INVALID_API_KEY: "API 密钥无效。",
    KEY_REVOKED: "此 API 密钥已被吊销。",
    KEY_EXPIRED: "此 API 密钥已过期。",
    LRS_NOT_ENABLED: "此 API 密钥未开通报表功能。",
    STREAM_NOT_ENABLED: "此 API 密钥未开通合作伙伴数据流。",
    UNKNOWN_ASSET: "未知的资产或计价货币。",
    NOT_FOUND: "未找到。",
    METHOD_NOT_ALLOWED: "此处不允许使用该方法；请参阅 Allow 标头。",
    RATE_LIMITED: "超出速率限制，请在 Retry-After 指定的时间后重试。",
    QUOTA_EXCEEDED: "此 API 密钥的月度配额已用尽。",
    NO_FRESH_PRICE: "该资产当前没有可用的最新价格。",
    SYSTEM_BUSY: "系统繁忙，请稍后重试。",
    MAINTENANCE: "服务正在维护中，请稍后重试。",
    INTERNAL: "服务器内部错误。",
    PAYMENT_NOT_COMPLETE: "付款尚未完成；请在付款成功后重试。",
    NO_SUBSCRIPTION: "未找到此电子邮件地址的有效订阅；请先订阅，再添加 LRS。"
  }
}

export const messageFor = (code: ResponseCode, lang: Lang): string => MESSAGES[lang][code]
